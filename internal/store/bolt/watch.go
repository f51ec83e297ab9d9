package bolt

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/tether-net/tether/internal/store"
)

// hub fans committed events out to watchers and keeps a ring of recent
// events for replay. Sends never block: a watcher whose buffer is full is
// dropped (its channel closed), so a stuck reader cannot stall writers.
type hub struct {
	mu       sync.Mutex
	closed   bool
	buffer   int
	watchers map[*watcher]struct{}

	ring  []store.Event // recent events, oldest at head
	head  int
	count int
	// compacted: events with a revision <= compacted may be missing from
	// the ring, so replay must start above it.
	compacted int64
}

type watcher struct {
	prefix string
	after  int64
	ch     chan store.Event
	stop   func() bool // unregisters the context callback
}

func newHub(rev int64, history, buffer int) *hub {
	return &hub{
		buffer:    buffer,
		watchers:  make(map[*watcher]struct{}),
		ring:      make([]store.Event, history),
		compacted: rev,
	}
}

// publish records events (one committed transaction) and sends them to
// every matching watcher.
func (h *hub) publish(events []store.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	for _, ev := range events {
		h.record(ev)
	}
	for w := range h.watchers {
		for _, ev := range events {
			if !w.send(ev) {
				h.drop(w)
				break
			}
		}
	}
}

func (h *hub) record(ev store.Event) {
	if h.count == len(h.ring) {
		h.compacted = max(h.compacted, h.ring[h.head].KV.Revision)
		h.head = (h.head + 1) % len(h.ring)
		h.count--
	}
	h.ring[(h.head+h.count)%len(h.ring)] = ev
	h.count++
}

// send queues ev if the watcher wants it; false means the queue is full.
func (w *watcher) send(ev store.Event) bool {
	if ev.KV.Revision <= w.after || !strings.HasPrefix(ev.KV.Key, w.prefix) {
		return true
	}
	select {
	case w.ch <- ev:
		return true
	default:
		return false
	}
}

// drop closes the watcher's channel; h.mu must be held.
func (h *hub) drop(w *watcher) {
	if _, ok := h.watchers[w]; !ok {
		return
	}
	delete(h.watchers, w)
	close(w.ch)
	w.stop()
}

func (h *hub) remove(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.drop(w)
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for w := range h.watchers {
		h.drop(w)
	}
}

// watch registers a watcher and queues the replay from after.
func (h *hub) watch(ctx context.Context, prefix string, after int64) (<-chan store.Event, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if after > 0 && after < h.compacted {
		return nil, fmt.Errorf("watch %q after revision %d: oldest replayable is %d: %w",
			prefix, after, h.compacted, store.ErrCompacted)
	}
	w := &watcher{prefix: prefix, after: after, ch: make(chan store.Event, h.buffer)}
	h.watchers[w] = struct{}{}
	w.stop = context.AfterFunc(ctx, func() { h.remove(w) })
	if after == 0 {
		return w.ch, nil
	}
	for i := range h.count {
		if !w.send(h.ring[(h.head+i)%len(h.ring)]) {
			h.drop(w)
			break
		}
	}
	return w.ch, nil
}

// Watch streams changes under prefix with revision > afterRev, in revision
// order, after they are committed; afterRev 0 means "from now". Replay
// reaches back over the last events kept in memory (see WithHistory) and
// never across a restart: older afterRev fails with store.ErrCompacted.
//
// The channel is closed when ctx is done, when the store closes, or when
// the watcher falls a full buffer behind (see WithWatchBuffer). After a
// close with ctx still live the caller must List again and re-watch.
// Events share Value slices between watchers: do not modify them.
func (s *Store) Watch(ctx context.Context, prefix string, afterRev int64) (<-chan store.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.hub.watch(ctx, prefix, afterRev)
}
