package portmap

// The userland proxy serves a held port from goroutines in the daemon, the
// way docker-proxy does from a process: TCP accepts on the held listener
// and relays each connection to the backend (splice(2) through a pipe per
// direction, relay_linux.go, and a half-close is passed on with
// CloseWrite); UDP keeps one flow per client address, a connected
// socket to the backend whose replies go back from the held socket, so the
// client sees them come from the address it sent to. The two sides are of
// any family: a held [::1] or [::] port may relay to an IPv4 backend (an
// IPv6 publish of an IPv4-only endpoint is served by the proxy alone) and a
// held IPv4 port to an IPv6 backend; the backend is dialed as "tcp"/"udp"
// and its address picks the family.

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

const (
	udpIdleTimeout = 30 * time.Second
	udpMaxFlows    = 4096
	udpBufSize     = 65535
)

var errProxyRunning = errors.New("proxy already running")

// Proxy starts the userland proxy on the held socket, relaying to backend
// (IPv4 or IPv6, whatever the held address's family; an IPv4-mapped
// backend is dialed as IPv4). It returns at once; the proxy runs until
// Close. One proxy per Held.
func (h *Held) Proxy(backend netip.AddrPort) error {
	if !backend.IsValid() {
		return fmt.Errorf("proxy %s/%s: invalid backend %s", h.Addr, h.Proto, backend)
	}
	backend = netip.AddrPortFrom(backend.Addr().Unmap(), backend.Port())
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return fmt.Errorf("proxy %s/%s: %w", h.Addr, h.Proto, net.ErrClosed)
	case h.proxied:
		return fmt.Errorf("proxy %s/%s: %w", h.Addr, h.Proto, errProxyRunning)
	}
	h.proxied = true
	h.wg.Add(1)
	if h.Proto == "tcp" {
		go h.acceptLoop(relayMode, backend)
		h.startRedirect(backend)
	} else {
		go h.udpLoop(backend)
	}
	return nil
}

func (h *Held) dial(network string, backend netip.AddrPort) (net.Conn, error) {
	if h.ns != nil {
		return h.ns.dial(network, backend.String())
	}
	return net.DialTimeout(network, backend.String(), dialTimeout)
}

// track registers c for Close and counts a goroutine; false once closed.
func (h *Held) track(c net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.conns[c] = struct{}{}
	h.wg.Add(1)
	return true
}

func (h *Held) untrack(c net.Conn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
	c.Close()
}

func (h *Held) acceptLoop(mode string, backend netip.AddrPort) {
	defer h.wg.Done()
	delay := 5 * time.Millisecond
	for {
		c, err := h.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: back off instead of spinning.
			slog.Warn("userland proxy accept", "addr", h.Addr, "err", err)
			select {
			case <-h.stop:
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, time.Second)
			continue
		}
		delay = 5 * time.Millisecond
		if !h.track(c) {
			c.Close()
			return
		}
		go h.relayTCP(mode, c, backend)
	}
}

func (h *Held) relayTCP(mode string, client *net.TCPConn, backend netip.AddrPort) {
	defer h.wg.Done()
	defer h.untrack(client)
	bc, err := h.dial("tcp", backend)
	if err != nil {
		slog.Debug("userland proxy dial", "backend", backend, "err", err)
		return
	}
	if !h.track(bc) {
		bc.Close()
		return
	}
	defer h.wg.Done()
	defer h.untrack(bc)
	defer proxyOpen("tcp")()
	server := bc.(*net.TCPConn)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		logRelay(relay(mode, client, server))
	}()
	logRelay(relay(mode, server, client))
	wg.Wait()
}

func logRelay(_ int64, err error) {
	if err != nil && !errors.Is(err, net.ErrClosed) {
		slog.Debug("userland proxy relay", "err", err)
	}
}

// udpFlow is one client's conversation: a socket connected to the backend.
type udpFlow struct {
	conn net.Conn
	last atomic.Int64 // unix nanos of the last packet either way
}

func (h *Held) udpLoop(backend netip.AddrPort) {
	defer h.wg.Done()
	flows := map[netip.AddrPort]*udpFlow{}
	var fmu sync.Mutex
	buf := make([]byte, udpBufSize)
	for {
		n, from, err := h.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		fmu.Lock()
		f := flows[from]
		if f == nil && len(flows) < udpMaxFlows {
			if f = h.newFlow(backend, from, func() {
				fmu.Lock()
				delete(flows, from)
				fmu.Unlock()
			}); f != nil {
				flows[from] = f
			}
		}
		fmu.Unlock()
		if f == nil {
			continue // too many flows or backend unreachable: drop
		}
		f.last.Store(time.Now().UnixNano())
		_, _ = f.conn.Write(buf[:n])
	}
}

func (h *Held) newFlow(backend, client netip.AddrPort, gone func()) *udpFlow {
	c, err := h.dial("udp", backend)
	if err != nil {
		return nil
	}
	if !h.track(c) {
		c.Close()
		return nil
	}
	f := &udpFlow{conn: c}
	f.last.Store(time.Now().UnixNano())
	go h.flowReplies(f, client, gone)
	return f
}

// flowReplies sends the backend's replies to client until the flow has
// been idle for udpIdleTimeout or the Held is closed.
func (h *Held) flowReplies(f *udpFlow, client netip.AddrPort, gone func()) {
	defer h.wg.Done()
	defer h.untrack(f.conn)
	defer gone()
	defer proxyOpen("udp")()
	buf := make([]byte, udpBufSize)
	for {
		idle := time.Since(time.Unix(0, f.last.Load()))
		if idle >= udpIdleTimeout {
			return
		}
		_ = f.conn.SetReadDeadline(time.Now().Add(udpIdleTimeout - idle))
		n, err := f.conn.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ECONNREFUSED from an ICMP error: keep the flow
		}
		f.last.Store(time.Now().UnixNano())
		_, _ = h.pc.WriteToUDPAddrPort(buf[:n], client)
	}
}
