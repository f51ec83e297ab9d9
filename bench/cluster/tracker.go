package clustersim

import (
	"sync"
	"time"
)

// Tracker follows every endpoint from its record's write to the last
// agent that programmed it. want is how many agents must program each
// endpoint (all but its own).
type Tracker struct {
	mu   sync.Mutex
	want int
	eps  map[string]*track
	nets map[string]int // network ID -> agents that installed it
	all  chan struct{}  // closed when every tracked endpoint is seen want times
	left int            // tracked endpoints not yet seen want times
}

type track struct {
	attached time.Time // the attach began (Take)
	written  time.Time // the Txn that put its record returned
	seen     int
	last     time.Time // the latest agent programmed it (complete once seen == want)
}

// NewTracker tracks endpoints that want agents must program.
func NewTracker(want int) *Tracker {
	return &Tracker{want: want, eps: map[string]*track{}, nets: map[string]int{}}
}

func (t *Tracker) get(id string) *track {
	tr := t.eps[id]
	if tr == nil {
		tr = &track{}
		t.eps[id] = tr
		t.left++
	}
	return tr
}

// attaching notes that an attach of endpoint id began.
func (t *Tracker) attaching(id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.get(id).attached = at
}

// written notes that endpoint id's record was written.
func (t *Tracker) written(id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr := t.get(id); tr.written.IsZero() {
		tr.written = at
	}
}

// seen notes that one more agent programmed endpoint id.
func (t *Tracker) seen(id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.get(id)
	tr.seen++
	if at.After(tr.last) { // calls may be let in out of the order of their times
		tr.last = at
	}
	if tr.seen == t.want {
		t.left--
		if t.left == 0 && t.all != nil {
			close(t.all)
			t.all = nil
		}
	}
}

// network notes that one more agent installed network id.
func (t *Tracker) network(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.nets[id]++
}

// Networks is how many agents installed network id.
func (t *Tracker) Networks(id string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nets[id]
}

// AllSeen returns a channel closed once every endpoint tracked so far was
// programmed by want agents.
func (t *Tracker) AllSeen() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := make(chan struct{})
	if t.left == 0 {
		close(ch)
	} else {
		t.all = ch
	}
	return ch
}

// Convergence returns, for every endpoint programmed everywhere, the time
// from its record's write to the last agent, and from its attach's start
// to the last agent; incomplete counts the others.
func (t *Tracker) Convergence() (fromWrite, fromAttach []time.Duration, incomplete int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tr := range t.eps {
		if tr.seen < t.want || tr.written.IsZero() {
			incomplete++
			continue
		}
		fromWrite = append(fromWrite, tr.last.Sub(tr.written))
		if !tr.attached.IsZero() {
			fromAttach = append(fromAttach, tr.last.Sub(tr.attached))
		}
	}
	return fromWrite, fromAttach, incomplete
}
