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

// eventHistory is how many past events are kept for `since` queries, as
// Docker keeps the last 256.
const eventHistory = 256

// Events fans out engine events to subscribers. A subscriber that does not
// keep up loses events rather than slowing the engine.
type Events struct {
	mu   sync.Mutex
	subs map[chan Event]struct{}
	past []Event // ring of the last eventHistory events
	next int     // where the next event goes once past is full
}

func newEvents() *Events { return &Events{subs: map[chan Event]struct{}{}} }

// Subscribe returns a channel of events and a function that ends the subscription.
func (ev *Events) Subscribe() (<-chan Event, func()) {
	_, c, cancel := ev.SubscribeSince(time.Time{})
	return c, cancel
}

// SubscribeSince is Subscribe plus the kept events at or after since (none
// for a zero since). No event is both in the past slice and on the channel,
// and none falls between them.
func (ev *Events) SubscribeSince(since time.Time) ([]Event, <-chan Event, func()) {
	c := make(chan Event, 256)
	ev.mu.Lock()
	var past []Event
	if !since.IsZero() {
		// oldest first: from next to the end, then from the start
		for _, e := range append(ev.past[ev.next:len(ev.past):len(ev.past)], ev.past[:ev.next]...) {
			if !e.Time.Before(since) {
				past = append(past, e)
			}
		}
	}
	ev.subs[c] = struct{}{}
	ev.mu.Unlock()
	return past, c, func() {
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
	if len(ev.past) < eventHistory {
		ev.past = append(ev.past, e)
	} else {
		ev.past[ev.next] = e
		ev.next = (ev.next + 1) % eventHistory
	}
	for c := range ev.subs {
		select {
		case c <- e:
		default:
		}
	}
}

// SubscribeEvents subscribes to the engine's events (Events.SubscribeSince).
func (e *Engine) SubscribeEvents(since time.Time) ([]Event, <-chan Event, func()) {
	return e.events.SubscribeSince(since)
}
