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

// echoTCP serves an echo on addr inside ns: every connection gets its
// bytes back, and a FIN once the client half-closed.
func echoTCP(t testing.TB, ns, addr string) {
	t.Helper()
	var ln net.Listener
	in(t, ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err })
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
	c.SetDeadline(time.Now().Add(hangGuard))
	data := make([]byte, 1<<20)
	rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		werr <- errors.Join(err, c.CloseWrite())
	}()
	got, err := io.ReadAll(c) // ends only when the FIN came back through the proxy
	if err != nil {
		t.Fatalf("read through proxy: %v (got %d bytes)", err, len(got))
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echo through proxy: got %d bytes, want the 1 MiB sent", len(got))
	}
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

// echoUDP answers every datagram on addr with "re:" + the datagram.
func echoUDP(t testing.TB, ns, addr string) {
	t.Helper()
	var pc net.PacketConn
	in(t, ns, func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err })
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
