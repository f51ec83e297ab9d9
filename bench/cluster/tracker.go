package clustersim

import (
	"math/bits"
	"sync"
	"time"
)

// Tracker follows every endpoint from its record's write to the last
// agent that programmed it, and from its record's deletion to the last
// agent that removed it (of those that held it when its withdrawal began:
// one that had dropped it before, as when its node's lease lapsed, owes
// nothing); and every network to each agent that installed it. want is how many agents must program an endpoint tracked from now
// on (the live agents but its own); SetWant changes it.
type Tracker struct {
	mu   sync.Mutex
	want int
	eps  map[string]*track
	nets map[string][]time.Time // network ID -> when each agent installed it (first time)
	// netAt is when a network's record was first written
	netAt map[string]time.Time
	all   chan struct{} // closed when every tracked endpoint is seen want times
	left  int           // tracked endpoints not yet seen their want times
	// stray counts removals of endpoints the harness did not withdraw (a
	// node's lease expired, or a spurious removal).
	stray int
}

type track struct {
	want      int
	attached  time.Time // the attach began (Take)
	written   time.Time // the Txn that put its record returned
	seen      agentSet  // agents that programmed it
	last      time.Time // the latest agent programmed it (complete once seen has want)
	complete  bool
	has       agentSet  // agents that hold it programmed now
	withdrawn time.Time // the withdrawal began
	deleted   time.Time // the Txn that deleted its record returned
	owe       agentSet  // agents that must remove it: those that held it when its withdrawal began
	gone      agentSet  // of those, the ones that removed it (and did not program it again)
	lastGone  time.Time
}

// agentSet is a set of agent indexes.
type agentSet []uint64

func (s *agentSet) add(i int) bool {
	for len(*s) <= i/64 {
		*s = append(*s, 0)
	}
	w, b := &(*s)[i/64], uint64(1)<<(i%64)
	if *w&b != 0 {
		return false
	}
	*w |= b
	return true
}

func (s agentSet) has(i int) bool { return i/64 < len(s) && s[i/64]&(uint64(1)<<(i%64)) != 0 }

func (s agentSet) del(i int) {
	if i/64 < len(s) {
		s[i/64] &^= uint64(1) << (i % 64)
	}
}

func (s agentSet) len() int {
	n := 0
	for _, w := range s {
		n += bits.OnesCount64(w)
	}
	return n
}

// NewTracker tracks endpoints that want agents must program.
func NewTracker(want int) *Tracker {
	return &Tracker{want: want, eps: map[string]*track{}, nets: map[string][]time.Time{}, netAt: map[string]time.Time{}}
}

// SetWant sets how many agents must program endpoints tracked from now on
// (agents were killed).
func (t *Tracker) SetWant(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.want = n
}

func (t *Tracker) get(id string) *track {
	tr := t.eps[id]
	if tr == nil {
		tr = &track{want: t.want}
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

// seen notes that agent programmed endpoint id.
func (t *Tracker) seen(agent int, id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.get(id)
	tr.has.add(agent)
	tr.gone.del(agent) // programmed again after a removal: it owes another
	if !tr.seen.add(agent) {
		return // a changed record programmed again
	}
	if at.After(tr.last) { // calls may be let in out of the order of their times
		tr.last = at
	}
	if !tr.complete && tr.seen.len() >= tr.want {
		tr.complete = true
		t.left--
		if t.left == 0 && t.all != nil {
			close(t.all)
			t.all = nil
		}
	}
}

// withdrawing notes that the withdrawal of endpoint id began: every agent
// that holds it programmed now must remove it.
func (t *Tracker) withdrawing(id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.get(id)
	tr.withdrawn = at
	tr.owe = append(agentSet(nil), tr.has...)
}

// deleted notes that endpoint id's record was deleted.
func (t *Tracker) deleted(id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr := t.get(id); tr.deleted.IsZero() {
		tr.deleted = at
	}
}

// removed notes that agent removed endpoint id.
func (t *Tracker) removed(agent int, id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.eps[id]
	if tr == nil || tr.withdrawn.IsZero() { // (its deletion may not be noted yet)
		t.stray++
		if tr == nil {
			return
		}
	}
	tr.has.del(agent)
	if tr.withdrawn.IsZero() || !tr.owe.has(agent) {
		return
	}
	tr.gone.add(agent)
	if at.After(tr.lastGone) {
		tr.lastGone = at
	}
}

// removedAll: every agent that held the endpoint when its withdrawal
// began removed it since.
func (tr *track) removedAll() bool {
	return !tr.deleted.IsZero() && tr.gone.len() >= tr.owe.len()
}

// network notes that agent installed network id.
func (t *Tracker) network(agent int, id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ts := t.nets[id]
	for len(ts) <= agent {
		ts = append(ts, time.Time{})
	}
	if ts[agent].IsZero() {
		ts[agent] = at
	}
	t.nets[id] = ts
}

// netWritten notes that network id's record was written.
func (t *Tracker) netWritten(id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.netAt[id]; !ok {
		t.netAt[id] = at
	}
}

// NetworkWritten is when network id's record was written (zero: not seen).
func (t *Tracker) NetworkWritten(id string) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.netAt[id]
}

// Networks is how many agents installed network id.
func (t *Tracker) Networks(id string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, at := range t.nets[id] {
		if !at.IsZero() {
			n++
		}
	}
	return n
}

// NetworkTimes is when each agent that installed network id did so.
func (t *Tracker) NetworkTimes(id string) []time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []time.Time
	for _, at := range t.nets[id] {
		if !at.IsZero() {
			out = append(out, at)
		}
	}
	return out
}

// Stray is how many removals were of endpoints the harness had not
// withdrawn.
func (t *Tracker) Stray() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stray
}

// Written reports whether endpoint id's record was written.
func (t *Tracker) Written(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.eps[id]
	return tr != nil && !tr.written.IsZero()
}

// Complete reports whether endpoint id was programmed by every agent it
// must be.
func (t *Tracker) Complete(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.eps[id]
	return tr != nil && tr.complete && !tr.written.IsZero()
}

// Pending counts the changes not yet seen everywhere: additions (adds)
// not programmed by every agent they must be, removals (dels) not removed
// by every agent that had programmed them.
func (t *Tracker) Pending(adds, dels []string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, id := range adds {
		if tr := t.eps[id]; tr == nil || !tr.complete || tr.written.IsZero() {
			n++
		}
	}
	for _, id := range dels {
		if tr := t.eps[id]; tr == nil || !tr.removedAll() {
			n++
		}
	}
	return n
}

// AllSeen returns a channel closed once every endpoint tracked so far was
// programmed by every agent it must be.
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
	ids := make([]string, 0, len(t.eps))
	for id := range t.eps {
		ids = append(ids, id)
	}
	t.mu.Unlock()
	return t.AddConvergence(ids)
}

// AddConvergence is Convergence of the endpoints ids only.
func (t *Tracker) AddConvergence(ids []string) (fromWrite, fromAttach []time.Duration, incomplete int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range ids {
		tr := t.eps[id]
		if tr == nil || !tr.complete || tr.written.IsZero() {
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

// RemovalConvergence returns, for every endpoint of ids whose record was
// deleted and that every agent that held it when its withdrawal began
// removed, the time from the deletion to the last such agent's removal;
// incomplete counts the others.
func (t *Tracker) RemovalConvergence(ids []string) (fromDelete []time.Duration, incomplete int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range ids {
		tr := t.eps[id]
		if tr == nil || !tr.removedAll() {
			incomplete++
			continue
		}
		last := tr.lastGone
		if tr.owe.len() == 0 {
			last = tr.deleted
		}
		fromDelete = append(fromDelete, last.Sub(tr.deleted))
	}
	return fromDelete, incomplete
}

// LastBy is the moment the last of the changes begun before t0 was seen
// everywhere: additions (adds: attach begun before t0) programmed, and
// removals (dels: withdrawal begun before t0) removed; ok is false if one
// of them is still pending.
func (t *Tracker) LastBy(t0 time.Time, adds, dels []string) (last time.Time, n int, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range adds {
		tr := t.eps[id]
		if tr == nil || !tr.attached.Before(t0) {
			continue
		}
		if !tr.complete || tr.written.IsZero() {
			return time.Time{}, n, false
		}
		n++
		last = later(last, tr.last)
	}
	for _, id := range dels {
		tr := t.eps[id]
		if tr == nil || !tr.withdrawn.Before(t0) {
			continue
		}
		if !tr.removedAll() {
			return time.Time{}, n, false
		}
		n++
		last = later(last, tr.lastGone)
	}
	return last, n, true
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
