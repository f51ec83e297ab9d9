package nlutil

import (
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DetachLink sets the link NAME down and releases it from its bridge,
// equivalent to `ip link set NAME down nomaster`, if it carries the alias
// marker (a link with another owner's alias is refused). Down first: the
// peer loses carrier and the bridge stops forwarding to the port before it
// leaves (leaving flushes the port's learned MACs). It returns the link's
// index, 0 when it is gone.
func DetachLink(h *netlink.Handle, name, marker string) (int, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		if IsLinkGone(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("find %q: %w", name, err)
	}
	if l.Attrs().Alias != marker {
		return 0, fmt.Errorf("link %q is not %s's; left alone", name, marker)
	}
	if err := h.LinkSetDown(l); err != nil {
		if IsLinkGone(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("set %q down: %w", name, err)
	}
	if err := h.LinkSetNoMaster(l); err != nil && !IsLinkGone(err) {
		return 0, fmt.Errorf("release %q from its bridge: %w", name, err)
	}
	return l.Attrs().Index, nil
}

// GoneWatch tells when links of the current network namespace are deleted:
// one netlink link subscription, running only while someone waits.
type GoneWatch struct {
	mu      sync.Mutex
	waiters map[int]goneWaiter
	stop    chan struct{} // closes the subscription; nil when none runs
}

type goneWaiter struct {
	marker string
	ch     chan struct{}
}

// Wait returns a channel closed once the link with this index and alias
// marker is deleted (an RTM_DELLINK for it, or already gone when the
// subscription starts). Without a subscription (it failed) the channel
// never closes: callers bound their wait.
func (w *GoneWatch) Wait(h *netlink.Handle, index int, marker string) <-chan struct{} {
	ch := make(chan struct{})
	w.mu.Lock()
	if w.waiters == nil {
		w.waiters = map[int]goneWaiter{}
	}
	w.waiters[index] = goneWaiter{marker: marker, ch: ch}
	if w.stop == nil {
		w.stop = make(chan struct{})
		w.subscribe(w.stop)
	}
	w.mu.Unlock()
	// Gone before the subscription could see it go?
	if l, err := h.LinkByIndex(index); err != nil && IsLinkGone(err) || err == nil && l.Attrs().Alias != marker {
		w.done(index, ch)
	}
	return ch
}

// Forget stops waiting for a link (the caller gave up on it).
func (w *GoneWatch) Forget(index int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.waiters, index)
	w.stopIfIdleLocked()
}

func (w *GoneWatch) done(index int, ch chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur, ok := w.waiters[index]; !ok || cur.ch != ch {
		return
	}
	delete(w.waiters, index)
	close(ch)
	w.stopIfIdleLocked()
}

func (w *GoneWatch) stopIfIdleLocked() {
	if len(w.waiters) == 0 && w.stop != nil {
		close(w.stop)
		w.stop = nil
	}
}

// subscribe runs the link subscription until stop closes. Called with w.mu
// held.
func (w *GoneWatch) subscribe(stop chan struct{}) {
	ch := make(chan netlink.LinkUpdate, 256)
	opts := netlink.LinkSubscribeWithOptions
	if err := opts(ch, stop, netlink.LinkSubscribeOptions{ErrorCallback: func(error) {}}); err != nil {
		return
	}
	go func() {
		for u := range ch {
			if u.Header.Type != unix.RTM_DELLINK {
				continue
			}
			w.mu.Lock()
			x, ok := w.waiters[int(u.Index)]
			w.mu.Unlock()
			if ok && u.Attrs().Alias == x.marker {
				w.done(int(u.Index), x.ch)
			}
		}
	}()
}
