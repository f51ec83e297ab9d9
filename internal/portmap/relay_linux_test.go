package portmap

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/netns"
)

func TestRelayModeFromEnv(t *testing.T) {
	for _, tt := range []struct{ env, want string }{
		{"", relaySplice},
		{"splice", relaySplice},
		{"gosplice", relayGoSplice},
		{"sockmap", relaySplice}, // measured, not offered: see sockmap_linux_test.go
		{"GOSPLICE", relaySplice},
	} {
		if got := relayModeFromEnv(tt.env); got != tt.want {
			t.Errorf("relayModeFromEnv(%q) = %q, want %q", tt.env, got, tt.want)
		}
	}
}

// stream writes n pseudo-random bytes from seed to w and returns their hash.
func stream(w io.Writer, seed uint64, n int) ([32]byte, error) {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	h := sha256.New()
	buf := make([]byte, 256<<10)
	for n > 0 {
		b := buf[:min(n, len(buf))]
		r.Read(b)
		h.Write(b)
		if _, err := w.Write(b); err != nil {
			return [32]byte{}, err
		}
		n -= len(b)
	}
	return [32]byte(h.Sum(nil)), nil
}

func drainHash(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return [32]byte(h.Sum(nil)), n, err
}

// hashServer listens on addr in ns; per connection it reads to EOF and
// sends n bytes of its own, either at the same time or only after the
// client's FIN (a reply to a half-closed connection), then closes. What
// it received is reported on got.
type hashServer struct {
	got chan [32]byte
}

func startHashServer(t *testing.T, ns, addr string, n int, afterFIN bool) *hashServer {
	t.Helper()
	var ln net.Listener
	in(t, ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err })
	t.Cleanup(func() { ln.Close() })
	s := &hashServer{got: make(chan [32]byte, 1)}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(4 * hangGuard))
		var wg sync.WaitGroup
		send := func() { stream(c, 2, n); c.(*net.TCPConn).CloseWrite() }
		if !afterFIN {
			wg.Go(send)
		}
		sum, _, _ := drainHash(c)
		if afterFIN {
			send()
		}
		wg.Wait()
		s.got <- sum
	}()
	return s
}

// TestRelayIntegrity moves 64 MiB each way through the proxy, with both
// relays, and checks every byte by hash: both directions at once, and a
// reply sent only after the client half-closed.
func TestRelayIntegrity(t *testing.T) {
	const n = 64 << 20
	ns := testNS(t)
	port := uint16(41100)
	for _, mode := range []string{relaySplice, relayGoSplice} {
		for _, afterFIN := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/reply-after-fin=%v", mode, afterFIN), func(t *testing.T) {
				defer setRelayMode(mode)()
				port++
				backend := fmt.Sprintf("127.0.0.2:%d", port)
				srv := startHashServer(t, ns, backend, n, afterFIN)
				h := holdIn(t, ns, "tcp", "127.0.0.1", port)
				if err := h.Proxy(netip.MustParseAddrPort(backend)); err != nil {
					t.Fatal(err)
				}
				c := dialIn(t, ns, "tcp4", fmt.Sprintf("127.0.0.1:%d", port)).(*net.TCPConn)
				c.SetDeadline(time.Now().Add(4 * hangGuard))
				sent := make(chan [32]byte, 1)
				go func() {
					sum, err := stream(c, 1, n)
					if err != nil {
						t.Errorf("send: %v", err)
					}
					c.CloseWrite()
					sent <- sum
				}()
				got, m, err := drainHash(c)
				if err != nil || m != n {
					t.Fatalf("client received %d of %d bytes: %v", m, n, err)
				}
				want, _ := stream(io.Discard, 2, n)
				if got != want {
					t.Error("bytes from the backend changed on the way")
				}
				if <-sent != <-srv.got {
					t.Error("bytes to the backend changed on the way")
				}
			})
		}
	}
}

func setRelayMode(m string) (restore func()) {
	old := relayMode
	relayMode = m
	return func() { relayMode = old }
}

func openFDs(t *testing.T) int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestRelayManyConnsNoLeak opens 300 short connections through the proxy
// (echo and close, half of them closed by the client before the echo), and
// checks the process's open fds come back to where they were: every
// socket and pipe of every connection is closed. The splice relay is
// checked; Go's own path keeps pipes in a pool and is not.
func TestRelayManyConnsNoLeak(t *testing.T) {
	ns := testNS(t)
	defer setRelayMode(relaySplice)()
	live := copyEcho(t, ns, "127.0.0.2:41001")
	h := holdIn(t, ns, "tcp", "127.0.0.1", 41002)
	if err := h.Proxy(netip.MustParseAddrPort("127.0.0.2:41001")); err != nil {
		t.Fatal(err)
	}
	exchange := func(i int) error {
		return netns.Do(ns, func() error {
			c, err := net.Dial("tcp4", "127.0.0.1:41002")
			if err != nil {
				return err
			}
			defer c.Close()
			if i%2 == 1 {
				return nil // closed at once: the proxy may not have dialed yet
			}
			return tcpEchoExchange(c.(*net.TCPConn), 1000+i)
		})
	}
	if err := exchange(0); err != nil { // warm up: the runtime's own fds
		t.Fatal(err)
	}
	waitConns(t, h, live, 0)
	before := openFDs(t)
	for i := range 300 {
		if err := exchange(i); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	waitConns(t, h, live, 0)
	// untrack takes a connection off the list just before closing it:
	// give the last closes a bounded moment.
	after := openFDs(t)
	for deadline := time.Now().Add(hangGuard); after > before && time.Now().Before(deadline); after = openFDs(t) {
		time.Sleep(10 * time.Millisecond)
	}
	if after > before {
		t.Errorf("open fds %d after 300 connections, %d before: %v", after, before, fdKinds(t))
	}
}

// fdKinds counts the process's open fds by kind (socket, pipe, ...).
func fdKinds(t *testing.T) map[string]int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, e := range es {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		kind, _, _ := strings.Cut(l, ":")
		kinds[kind]++
	}
	return kinds
}

// copyEcho is echoTCP with a read/write loop (io.Copy between two
// *net.TCPConn would splice through Go's pipe pool, whose fds stay open
// after the connection) and a count of its open connections.
func copyEcho(t *testing.T, ns, addr string) *atomic.Int64 {
	t.Helper()
	var ln net.Listener
	in(t, ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err })
	t.Cleanup(func() { ln.Close() })
	live := new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			live.Add(1)
			go func() {
				defer live.Add(-1)
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						break
					}
					if _, err := c.Write(buf[:n]); err != nil {
						break
					}
				}
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return live
}

// waitConns waits (bounded) until h's proxy tracks n connections and the
// backend has none open.
func waitConns(t *testing.T, h *Held, backend *atomic.Int64, n int) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		h.mu.Lock()
		got := len(h.conns)
		h.mu.Unlock()
		if got == n && backend.Load() == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy still tracks %d connections (want %d), backend has %d open", got, n, backend.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRelayBackendDown: a client whose backend refuses is closed, and the
// proxy keeps serving once the backend is there.
func TestRelayBackendDown(t *testing.T) {
	ns := testNS(t)
	h := holdIn(t, ns, "tcp", "127.0.0.1", 41003)
	if err := h.Proxy(netip.MustParseAddrPort("127.0.0.2:41004")); err != nil {
		t.Fatal(err)
	}
	c := dialIn(t, ns, "tcp4", "127.0.0.1:41003")
	c.SetDeadline(time.Now().Add(hangGuard))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("read with the backend down: %v, want EOF", err)
	}
	echoTCP(t, ns, "127.0.0.2:41004")
	if err := tcpEchoExchange(dialIn(t, ns, "tcp4", "127.0.0.1:41003").(*net.TCPConn), 4096); err != nil {
		t.Error(err)
	}
}
