package attach

// When a removed sandbox's links are gone: every remove figure in bench/
// reports the API answer and the time until the sandbox's host-side veth(s)
// are deleted, taken from netlink link events (RTM_DELLINK) in the host
// namespace, not from polling. A LinkWatch subscribes before the first
// removal and records the arrival time of every deletion; a removal's
// "links gone" is the last of its veths' deletions minus the start of its
// request.

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// LinkWatch records, from the moment WatchLinks returns, when each link of
// one network namespace is deleted (RTM_DELLINK of family AF_UNSPEC; the
// bridge's own RTM_DELLINK of family AF_BRIDGE, sent when a port merely
// leaves its bridge, is not a deletion and is ignored).
type LinkWatch struct {
	ns   vnetns.NsHandle
	h    *netlink.Handle // bound to the namespace (lookups, not timed)
	done chan struct{}
	ch   chan netlink.LinkUpdate
	fin  chan struct{} // closed when the reader has seen ch closed

	mu      sync.Mutex
	gone    map[int]deletion // ifindex → its last deletion
	changed chan struct{}    // closed and replaced on every deletion
	err     error            // subscription failure (e.g. ENOBUFS: events lost)
	closing bool
}

type deletion struct {
	at   time.Time
	name string
}

// WatchLinks subscribes to link events in the network namespace file at
// nsPath (e.g. /run/netns/NAME). Close it when done.
func WatchLinks(nsPath string) (*LinkWatch, error) {
	ns, err := vnetns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open namespace %q: %w", nsPath, err)
	}
	w := &LinkWatch{ns: ns, done: make(chan struct{}), ch: make(chan netlink.LinkUpdate, 1024),
		fin: make(chan struct{}), gone: map[int]deletion{}, changed: make(chan struct{})}
	if w.h, err = netlink.NewHandleAt(ns); err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink handle in %q: %w", nsPath, err)
	}
	err = netlink.LinkSubscribeWithOptions(w.ch, w.done, netlink.LinkSubscribeOptions{
		Namespace:     &w.ns,
		ErrorCallback: w.fail,
		// a row of removals sends a few events per link: room for thousands
		ReceiveBufferSize:      4 << 20,
		ReceiveBufferForceSize: true,
	})
	if err != nil {
		w.h.Close()
		ns.Close()
		return nil, fmt.Errorf("subscribe to link events in %q: %w", nsPath, err)
	}
	go w.read()
	return w, nil
}

func (w *LinkWatch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closing && w.err == nil {
		w.err = fmt.Errorf("link events: %w", err)
		close(w.changed)
		w.changed = make(chan struct{})
	}
}

func (w *LinkWatch) read() {
	defer close(w.fin)
	for u := range w.ch {
		if u.Header.Type != unix.RTM_DELLINK || u.IfInfomsg.Family != unix.AF_UNSPEC {
			continue
		}
		at := time.Now()
		w.mu.Lock()
		w.gone[int(u.IfInfomsg.Index)] = deletion{at: at, name: u.Link.Attrs().Name}
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}
}

// Close ends the subscription and releases the namespace.
func (w *LinkWatch) Close() {
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	close(w.done)
	// the subscription's socket closes asynchronously; the reader ends when
	// the library closes the channel
	select {
	case <-w.fin:
	case <-time.After(5 * time.Second):
	}
	w.h.Close()
	w.ns.Close()
}

// Index returns the index of the link called name in the namespace (a
// lookup, for use outside the timing).
func (w *LinkWatch) Index(name string) (int, error) {
	l, err := w.h.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("link %q: %w", name, err)
	}
	return l.Attrs().Index, nil
}

// Veths returns the veth links present now: index → name.
func (w *LinkWatch) Veths() (map[int]string, error) {
	ls, err := w.h.LinkList()
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	for _, l := range ls {
		if l.Type() == "veth" {
			out[l.Attrs().Index] = l.Attrs().Name
		}
	}
	return out, nil
}

// NewVeths returns the veths in after that are not in before (what a
// create added, when nothing else runs at the same time), as indexes.
func NewVeths(before, after map[int]string) []int {
	var out []int
	for i, name := range after {
		if before[i] != name {
			out = append(out, i)
		}
	}
	return out
}

// GoneAt returns when the link with index idx was deleted, if that happened
// at or after since (an older deletion is a previous link with the index).
func (w *LinkWatch) GoneAt(idx int, since time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	d, ok := w.gone[idx]
	if !ok || d.at.Before(since) {
		return time.Time{}, false
	}
	return d.at, true
}

// WaitGone waits up to timeout until every link in idxs has been deleted at
// or after since and returns the time from since to the last deletion.
func (w *LinkWatch) WaitGone(idxs []int, since time.Time, timeout time.Duration) (time.Duration, error) {
	if len(idxs) == 0 {
		return 0, errors.New("no links to wait for")
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		var last time.Time
		missing := 0
		for _, i := range idxs {
			d, ok := w.gone[i]
			if !ok || d.at.Before(since) {
				missing++
				continue
			}
			if d.at.After(last) {
				last = d.at
			}
		}
		err, changed := w.err, w.changed
		w.mu.Unlock()
		if missing == 0 {
			return last.Sub(since), nil
		}
		if err != nil {
			return 0, err
		}
		select {
		case <-changed:
		case <-deadline.C:
			return 0, fmt.Errorf("links %v: %d not deleted %v after the removal started", idxs, missing, timeout)
		}
	}
}

// GoneAfter returns, for each removal i that started at starts[i], the time
// until the last of its links idxs[i] was deleted, waiting up to timeout in
// all for deletions still to come.
func (w *LinkWatch) GoneAfter(idxs [][]int, starts []time.Time, timeout time.Duration) ([]time.Duration, error) {
	out := make([]time.Duration, len(idxs))
	deadline := time.Now().Add(timeout)
	var errs []error
	for i := range idxs {
		d, err := w.WaitGone(idxs[i], starts[i], max(time.Until(deadline), time.Millisecond))
		if err != nil {
			errs = append(errs, fmt.Errorf("removal %d: %w", i, err))
		}
		out[i] = d
	}
	return out, errors.Join(errs...)
}

// Err reports a failure of the subscription (events may have been lost).
func (w *LinkWatch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// RemoveRow removes n sandboxes through remove (from clients goroutines at
// once, as Parallel) and returns each removal's answer time and the row's
// wall time, as Parallel does, and from w's link events each removal's
// links gone (links[i]: the host-side indexes of sandbox i) and the wall
// time from the first removal's start to the last deletion. The
// deletions are collected after the row, so that waiting for them never
// delays the next removal; they are waited for up to timeout.
func RemoveRow(n, clients int, w *LinkWatch, links [][]int, timeout time.Duration,
	remove func(i int) (time.Duration, error)) (answer []time.Duration, wall time.Duration, gone []time.Duration, goneWall time.Duration, err error) {
	starts := make([]time.Time, n)
	first := time.Now()
	answer, wall, err = Parallel(n, clients, func(i int) (time.Duration, error) {
		starts[i] = time.Now()
		return remove(i)
	})
	if err != nil {
		return answer, wall, nil, 0, err
	}
	gone, err = w.GoneAfter(links, starts, timeout)
	if err != nil {
		return answer, wall, gone, 0, err
	}
	for i, g := range gone {
		goneWall = max(goneWall, starts[i].Add(g).Sub(first))
	}
	return answer, wall, gone, goneWall, nil
}
