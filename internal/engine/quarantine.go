package engine

// Addresses of removed endpoints whose veth may still be live.
//
// rm answers without waiting for the kernel: the teardown of a sandbox's
// namespace deletes its veths in the background (tens of milliseconds, or
// never while a stray process holds the namespace). Before rm answers, each
// endpoint's host end is detached (driver.Detacher: down, off the bridge),
// so nothing reaches the old sandbox through the network, and its address
// (and with it its MAC, derived from the address) stays reserved until the
// link is seen gone (the driver's Detach says when: the bridge driver
// watches link events while something is detached). A link still there
// after quarantineGrace is deleted through its driver. An attach that
// asks for a quarantined address (static, or sticky after rm and re-create)
// waits for it. A crash leaves the addresses reserved in the store; the next
// start's garbage collection deletes the links and frees them.

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/tether-net/tether/internal/driver"
)

// quarantineGrace is how long a detached veth may outlive its sandbox
// before the daemon deletes it itself (its namespace is held elsewhere).
const quarantineGrace = 2 * time.Second

// held is one address waiting for its veth to go.
type held struct {
	netID    string     // the address's network
	addr     netip.Addr // IPv4, or IPv6 on an IPv6-only network: the key
	addr6    netip.Addr // IPv6 of a dual-stack endpoint, freed with addr
	drv      driver.Driver
	net      *driver.Network
	ep       *driver.Endpoint
	linkGone <-chan struct{} // from the driver's Detach
	gone     chan struct{}   // closed once the address is free again
}

func (h *held) key() string { return h.netID + "/" + h.addr.String() }

// quarantine tracks the held addresses.
type quarantine struct {
	mu     sync.Mutex
	byAddr map[string]*held
	stop   chan struct{} // closed by stopQuarantine
}

func newQuarantine() *quarantine {
	return &quarantine{byAddr: map[string]*held{}, stop: make(chan struct{})}
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
	linkGone, err := d.Detach(ctx, dn, dep)
	if err != nil || linkGone == nil || (x.ns.subnet == nil && x.ns.subnet6 == nil) || e.isGlobal(x.ns.rec) ||
		(!x.ep.Address.IsValid() && !x.ep.Address6.IsValid()) {
		return nil, err
	}
	h := &held{netID: x.ns.rec.ID, addr: x.ep.Address.Addr(), drv: drv, net: dn, ep: dep, linkGone: linkGone, gone: make(chan struct{})}
	if x.ep.Address.IsValid() {
		h.addr6 = x.ep.Address6.Addr()
	} else {
		h.addr = x.ep.Address6.Addr()
	}
	return h, nil
}

// hold starts waiting for the links of hs to go. Their addresses must still
// be reserved in their networks' allocators.
func (e *Engine) hold(hs []*held) {
	q := e.quarantine
	q.mu.Lock()
	for _, h := range hs {
		q.byAddr[h.key()] = h
	}
	q.mu.Unlock()
	for _, h := range hs {
		go e.await(h)
	}
}

// await frees a held address when its link goes, or deletes the link
// itself once it outlived the grace period (its namespace is held by
// something else), then frees the address.
func (e *Engine) await(h *held) {
	t := time.NewTimer(quarantineGrace)
	defer t.Stop()
	for {
		select {
		case <-h.linkGone:
			e.release(h)
			return
		case <-e.quarantine.stop:
			return
		case <-t.C:
		}
		if err := h.drv.Leave(context.Background(), h.net, h.ep, ""); err != nil {
			e.log.Warn("delete the veth of a removed sandbox", "link", h.ep.HostIfName, "err", err)
			t.Reset(quarantineGrace)
			continue
		}
		e.log.Info("deleted the veth of a removed sandbox whose namespace is held elsewhere", "link", h.ep.HostIfName, "address", h.addr)
		e.release(h)
		return
	}
}

// release frees a held address (once).
func (e *Engine) release(h *held) {
	q := e.quarantine
	q.mu.Lock()
	if q.byAddr[h.key()] != h {
		q.mu.Unlock()
		return
	}
	delete(q.byAddr, h.key())
	q.mu.Unlock()
	e.mu.Lock()
	if ns := e.networks[h.netID]; ns != nil {
		ep := &Endpoint{Address: netip.PrefixFrom(h.addr, h.addr.BitLen())}
		if h.addr.Is6() {
			ep.Address, ep.Address6 = netip.Prefix{}, ep.Address
		}
		if h.addr6.IsValid() {
			ep.Address6 = netip.PrefixFrom(h.addr6, 128)
		}
		e.releaseLocked(ns, ep)
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

// stopQuarantine stops waiting (daemon shutdown); held addresses stay
// reserved in the store for the next start to free.
func (e *Engine) stopQuarantine() {
	q := e.quarantine
	q.mu.Lock()
	defer q.mu.Unlock()
	select {
	case <-q.stop:
	default:
		close(q.stop)
	}
	q.byAddr = map[string]*held{}
}
