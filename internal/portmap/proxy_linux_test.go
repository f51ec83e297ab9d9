package portmap

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// hangGuard bounds blocking reads so a broken proxy fails instead of hanging.
const hangGuard = 10 * time.Second

// echoTCP serves an echo on addr (IPv4 or IPv6) inside ns: every
// connection gets its bytes back, and a FIN once the client half-closed.
func echoTCP(t testing.TB, ns, addr string) {
	t.Helper()
	var ln net.Listener
	in(t, ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err })
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
}

func dialIn(t testing.TB, ns, network, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	in(t, ns, func() (err error) { c, err = net.Dial(network, addr); return err })
	t.Cleanup(func() { c.Close() })
	return c
}

func TestProxyTCPEchoHalfClose(t *testing.T) {
	ns := testNS(t)
	echoTCP(t, ns, "127.0.0.2:9000")
	h := holdIn(t, ns, "tcp", "127.0.0.1", 8080)
	if err := h.Proxy(netip.MustParseAddrPort("127.0.0.2:9000")); err != nil {
		t.Fatal(err)
	}
	if err := h.Proxy(netip.MustParseAddrPort("127.0.0.2:9000")); err == nil {
		t.Error("second Proxy on the same Held succeeded")
	}
	c := dialIn(t, ns, "tcp4", "127.0.0.1:8080").(*net.TCPConn)
	if err := tcpEchoExchange(c, 1<<20); err != nil {
		t.Fatal(err)
	}
}

// tcpEchoExchange sends n random bytes on c, half-closes, and checks that
// exactly those bytes and then a FIN come back.
func tcpEchoExchange(c *net.TCPConn, n int) error {
	c.SetDeadline(time.Now().Add(hangGuard))
	data := make([]byte, n)
	rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		werr <- errors.Join(err, c.CloseWrite())
	}()
	got, err := io.ReadAll(c) // ends only when the FIN came back through the proxy
	if err != nil {
		return fmt.Errorf("read through proxy: %w (got %d bytes)", err, len(got))
	}
	if err := <-werr; err != nil {
		return err
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("echo through proxy: got %d bytes, want the %d sent", len(got), n)
	}
	return nil
}

func TestProxyCloseStops(t *testing.T) {
	ns := testNS(t)
	echoTCP(t, ns, "127.0.0.2:9000")
	h := holdIn(t, ns, "tcp", "127.0.0.1", 8080)
	if err := h.Proxy(netip.MustParseAddrPort("127.0.0.2:9000")); err != nil {
		t.Fatal(err)
	}
	c := dialIn(t, ns, "tcp4", "127.0.0.1:8080")
	c.SetDeadline(time.Now().Add(hangGuard))
	buf := []byte("ping")
	if _, err := c.Write(buf); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo before Close: %q, %v", buf, err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(buf); err == nil {
		t.Errorf("open connection survived Close: read %d bytes", n)
	}
	in(t, ns, func() error {
		c2, err := net.Dial("tcp4", "127.0.0.1:8080")
		if err == nil {
			c2.Close()
			return fmt.Errorf("connect after Close succeeded")
		}
		return nil
	})
	if err := h.Proxy(netip.MustParseAddrPort("127.0.0.2:9000")); err == nil {
		t.Error("Proxy after Close succeeded")
	}
}

// echoUDP answers every datagram on addr (IPv4 or IPv6) with "re:" + the
// datagram.
func echoUDP(t testing.TB, ns, addr string) {
	t.Helper()
	var pc net.PacketConn
	in(t, ns, func() (err error) { pc, err = net.ListenPacket("udp", addr); return err })
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("re:"), buf[:n]...), from)
		}
	}()
}

func TestProxyUDPTwoClients(t *testing.T) {
	ns := testNS(t)
	echoUDP(t, ns, "127.0.0.2:9053")
	h := holdIn(t, ns, "udp", "127.0.0.1", 5353)
	if err := h.Proxy(netip.MustParseAddrPort("127.0.0.2:9053")); err != nil {
		t.Fatal(err)
	}
	// Connected client sockets accept replies only from 127.0.0.1:5353.
	clients := []net.Conn{dialIn(t, ns, "udp4", "127.0.0.1:5353"), dialIn(t, ns, "udp4", "127.0.0.1:5353")}
	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- udpExchange(c, i, 50)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// udpExchange sends n numbered requests one at a time and checks each reply.
func udpExchange(c net.Conn, id, n int) error {
	buf := make([]byte, 2048)
	for j := range n {
		req := fmt.Sprintf("client %d request %d", id, j)
		if _, err := c.Write([]byte(req)); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(hangGuard))
		m, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("client %d request %d: %w", id, j, err)
		}
		if got := string(buf[:m]); got != "re:"+req {
			return fmt.Errorf("client %d: got reply %q to %q", id, got, req)
		}
	}
	return nil
}

// TestProxyAcrossFamilies relays real TCP and UDP traffic over loopback
// from a held IPv6 port to IPv6 and IPv4 backends (an IPv6 publish of an
// IPv4-only endpoint is served by the proxy alone) and from a held IPv4
// port to an IPv6 backend.
func TestProxyAcrossFamilies(t *testing.T) {
	ns := testNS(t)
	backends := []string{"[::1]:9000", "127.0.0.2:9000"}
	for _, b := range backends {
		echoTCP(t, ns, b)
		echoUDP(t, ns, b)
	}
	tests := []struct {
		held, dial, backend string // dial: where the client connects
	}{
		{"::1", "[::1]:%d", "[::1]:9000"},
		{"::1", "[::1]:%d", "127.0.0.2:9000"},
		{"::", "[::1]:%d", "127.0.0.2:9000"},
		{"::", "[::1]:%d", "[::1]:9000"},
		{"127.0.0.1", "127.0.0.1:%d", "[::1]:9000"},
		{"0.0.0.0", "127.0.0.1:%d", "[::ffff:127.0.0.2]:9000"}, // a mapped backend is dialed as IPv4
	}
	for i, tt := range tests {
		port := uint16(8100 + i)
		dial := fmt.Sprintf(tt.dial, port)
		name := fmt.Sprintf("%s->%s", dial, tt.backend)
		t.Run(name, func(t *testing.T) {
			for _, proto := range []string{"tcp", "udp"} {
				h := holdIn(t, ns, proto, tt.held, port)
				if err := h.Proxy(netip.MustParseAddrPort(tt.backend)); err != nil {
					t.Fatal(err)
				}
				c := dialIn(t, ns, proto, dial)
				var err error
				if proto == "tcp" {
					err = tcpEchoExchange(c.(*net.TCPConn), 64<<10)
				} else {
					err = udpExchange(c, 0, 5) // connected: replies only from dial
				}
				if err != nil {
					t.Errorf("%s %s: %v", proto, name, err)
				}
			}
		})
	}
}

// TestProxyIPv6HoldTakesNoIPv4: a proxied [::]:P (V6ONLY) serves IPv6
// clients only; 127.0.0.1:P is left to whoever holds 0.0.0.0:P, here a
// second proxy to another backend, as Docker serves a dual-stack publish.
func TestProxyIPv6HoldTakesNoIPv4(t *testing.T) {
	ns := testNS(t)
	echoTCP(t, ns, "[::1]:9000")
	var ln net.Listener // the IPv4 backend: says "v4" and closes
	in(t, ns, func() (err error) { ln, err = net.Listen("tcp4", "127.0.0.2:9001"); return err })
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("v4"))
			c.Close()
		}
	}()
	h6 := holdIn(t, ns, "tcp", "::", 8200)
	h4 := holdIn(t, ns, "tcp", "0.0.0.0", 8200)
	if err := errors.Join(h6.Proxy(netip.MustParseAddrPort("[::1]:9000")), h4.Proxy(netip.MustParseAddrPort("127.0.0.2:9001"))); err != nil {
		t.Fatal(err)
	}
	if err := tcpEchoExchange(dialIn(t, ns, "tcp", "[::1]:8200").(*net.TCPConn), 1024); err != nil {
		t.Errorf("[::1]:8200: %v", err)
	}
	c := dialIn(t, ns, "tcp", "127.0.0.1:8200")
	c.SetDeadline(time.Now().Add(hangGuard))
	if got, err := io.ReadAll(c); err != nil || string(got) != "v4" {
		t.Errorf("127.0.0.1:8200: got %q, %v; want the IPv4 backend's \"v4\"", got, err)
	}
}
