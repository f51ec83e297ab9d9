package engine

// Addresses of removed endpoints whose veth may still be live.
//
// rm answers without waiting for the kernel: the teardown of a sandbox's
// namespace deletes its veths in the background (tens of milliseconds, or
// never while a stray process holds the namespace). Before rm answers, each
// endpoint's host end is detached (driver.Detacher: down, off the bridge),
// so nothing reaches the old sandbox through the network, and its address
// (and with it its MAC, derived from the address) stays reserved until the
// link is seen gone: an RTM_DELLINK for its index, from a netlink link
// subscription that runs only while something is quarantined. A link still
// there after quarantineGrace is deleted through its driver. An attach that
// asks for a quarantined address (static, or sticky after rm and re-create)
// waits for it. A crash leaves the addresses reserved in the store; the next
// start's garbage collection deletes the links and frees them.

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	"github.com/tether-net/tether/internal/nlutil"
)

// quarantineGrace is how long a detached veth may outlive its sandbox
// before the daemon deletes it itself (its namespace is held elsewhere).
const quarantineGrace = 2 * time.Second

// held is one address waiting for its veth to go.
type held struct {
	index int    // host end's interface index
	netID string // the address's network
	addr  netip.Addr
	drv   driver.Driver
	net   *driver.Network
	ep    *driver.Endpoint
	gone  chan struct{} // closed once the address is free again
}

func (h *held) key() string { return h.netID + "/" + h.addr.String() }

// quarantine tracks the held addresses.
type quarantine struct {
	mu      sync.Mutex
	byIndex map[int]*held
	byAddr  map[string]*held
	stop    chan struct{} // closes the link subscription; nil when none runs
}

func newQuarantine() *quarantine {
	return &quarantine{byIndex: map[int]*held{}, byAddr: map[string]*held{}}
}

// detachEndpoint cuts an endpoint of a sandbox being removed off its
// network and reports what to hold until its link is gone (nil: nothing,
// the link is gone already or the network allocates no local address).
func (e *Engine) detachEndpoint(ctx context.Context, x sbEndpoint) (*held, error) {
	drv := e.drivers[x.ns.rec.Driver]
	d, ok := drv.(driver.Detacher)
	if !ok {
		return nil, nil
	}
	dn, dep := driverNetwork(x.ns.rec), driverEndpoint(x.ep)
	idx, err := d.Detach(ctx, dn, dep)
	if err != nil || idx == 0 || x.ns.subnet == nil || e.isGlobal(x.ns.rec) || !x.ep.Address.IsValid() {
		return nil, err
	}
	return &held{index: idx, netID: x.ns.rec.ID, addr: x.ep.Address.Addr(), drv: drv, net: dn, ep: dep, gone: make(chan struct{})}, nil
}

// hold starts waiting for the links of hs to go. Their addresses must still
// be reserved in their networks' allocators.
func (e *Engine) hold(hs []*held) {
	if len(hs) == 0 {
		return
	}
	q := e.quarantine
	q.mu.Lock()
	for _, h := range hs {
		q.byIndex[h.index] = h
		q.byAddr[h.key()] = h
	}
	if q.stop == nil {
		q.stop = make(chan struct{})
		e.watchLinks(q.stop)
	}
	q.mu.Unlock()
	for _, h := range hs {
		// Gone before the subscription could see it go?
		if l, err := e.nl.LinkByIndex(h.index); err != nil && nlutil.IsLinkGone(err) || err == nil && l.Attrs().Alias != bridge.AliasPrefix+h.ep.ID {
			e.release(h)
			continue
		}
		time.AfterFunc(quarantineGrace, func() { e.expire(h) })
	}
}

// watchLinks subscribes to link events of the daemon's namespace until stop
// closes, releasing a held address when its link is deleted. Without the
// subscription (it failed), expire still frees every address in time.
func (e *Engine) watchLinks(stop chan struct{}) {
	ch := make(chan netlink.LinkUpdate, 256)
	opts := netlink.LinkSubscribeOptions{ErrorCallback: func(err error) {
		e.log.Debug("link subscription", "err", err)
	}}
	if err := netlink.LinkSubscribeWithOptions(ch, stop, opts); err != nil {
		e.log.Warn("subscribe to link events: removed sandboxes' addresses are freed after the grace period only", "err", err)
		return
	}
	go func() {
		for u := range ch {
			if u.Header.Type != unix.RTM_DELLINK {
				continue
			}
			e.quarantine.mu.Lock()
			h := e.quarantine.byIndex[int(u.Index)]
			e.quarantine.mu.Unlock()
			if h != nil && u.Attrs().Alias == bridge.AliasPrefix+h.ep.ID {
				e.release(h)
			}
		}
	}()
}

// expire deletes a held link that outlived the grace period (its namespace
// is held by something else), then frees its address.
func (e *Engine) expire(h *held) {
	if !e.isHeld(h) {
		return
	}
	if err := h.drv.Leave(context.Background(), h.net, h.ep, ""); err != nil {
		e.log.Warn("delete the veth of a removed sandbox", "link", h.ep.HostIfName, "err", err)
		time.AfterFunc(quarantineGrace, func() { e.expire(h) })
		return
	}
	e.log.Info("deleted the veth of a removed sandbox whose namespace is held elsewhere", "link", h.ep.HostIfName, "address", h.addr)
	e.release(h)
}

func (e *Engine) isHeld(h *held) bool {
	e.quarantine.mu.Lock()
	defer e.quarantine.mu.Unlock()
	return e.quarantine.byIndex[h.index] == h
}

// release frees a held address (once) and stops the subscription when
// nothing is held any more.
func (e *Engine) release(h *held) {
	q := e.quarantine
	q.mu.Lock()
	if q.byIndex[h.index] != h {
		q.mu.Unlock()
		return
	}
	delete(q.byIndex, h.index)
	delete(q.byAddr, h.key())
	if len(q.byIndex) == 0 && q.stop != nil {
		close(q.stop)
		q.stop = nil
	}
	q.mu.Unlock()
	e.mu.Lock()
	if ns := e.networks[h.netID]; ns != nil && ns.subnet != nil {
		ops, err := e.releaseLocked(ns, &Endpoint{Address: netip.PrefixFrom(h.addr, 32)})
		if err == nil {
			err = e.commit(context.Background(), ops...)
		}
		if err != nil {
			e.log.Warn("free the address of a removed sandbox", "address", h.addr, "err", err)
		}
	}
	e.mu.Unlock()
	close(h.gone)
}

// awaitRelease waits (at most quarantineGrace and a little more) until addr
// on network netID is no longer held, so that a sandbox re-created right
// after rm gets its sticky or static address back.
func (e *Engine) awaitRelease(ctx context.Context, netID string, addr netip.Addr) {
	if !addr.IsValid() {
		return
	}
	e.quarantine.mu.Lock()
	h := e.quarantine.byAddr[netID+"/"+addr.String()]
	e.quarantine.mu.Unlock()
	if h == nil {
		return
	}
	t := time.NewTimer(quarantineGrace + time.Second)
	defer t.Stop()
	select {
	case <-h.gone:
	case <-t.C:
	case <-ctx.Done():
	}
}

// stopQuarantine ends the link subscription (daemon shutdown); held
// addresses stay reserved in the store for the next start to free.
func (e *Engine) stopQuarantine() {
	q := e.quarantine
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stop != nil {
		close(q.stop)
		q.stop = nil
	}
	q.byIndex, q.byAddr = map[int]*held{}, map[string]*held{}
}
