package engine

import (
	"sync"
	"time"
)

// Event is one change, in the terms of Docker's events API.
type Event struct {
	Type   string // "network" (later "container" for sandboxes)
	Action string // create, destroy, connect, disconnect
	ID     string
	Attrs  map[string]string
	Time   time.Time
}

// Events fans out engine events to subscribers. A subscriber that does not
// keep up loses events rather than slowing the engine.
type Events struct {
	mu   sync.Mutex
	subs map[chan Event]struct{}
}

func newEvents() *Events { return &Events{subs: map[chan Event]struct{}{}} }

// Subscribe returns a channel of events and a function that ends the subscription.
func (ev *Events) Subscribe() (<-chan Event, func()) {
	c := make(chan Event, 256)
	ev.mu.Lock()
	ev.subs[c] = struct{}{}
	ev.mu.Unlock()
	return c, func() {
		ev.mu.Lock()
		if _, ok := ev.subs[c]; ok {
			delete(ev.subs, c)
			close(c)
		}
		ev.mu.Unlock()
	}
}

func (ev *Events) publish(e Event) {
	e.Time = time.Now()
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for c := range ev.subs {
		select {
		case c <- e:
		default:
		}
	}
}
