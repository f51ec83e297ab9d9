package dns

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// fakeListener returns the queued results of Accept in order, then
// net.ErrClosed (as a closed listener).
type fakeListener struct {
	results []any // net.Conn or error
}

func (f *fakeListener) Accept() (net.Conn, error) {
	if len(f.results) == 0 {
		return nil, net.ErrClosed
	}
	r := f.results[0]
	f.results = f.results[1:]
	if err, ok := r.(error); ok {
		return nil, err
	}
	return r.(net.Conn), nil
}
func (f *fakeListener) Close() error   { return nil }
func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{} }

// closeCounter is a net.Conn that counts Close calls.
type closeCounter struct {
	net.Conn
	closes *atomic.Int64
}

func (c closeCounter) Close() error { c.closes.Add(1); return nil }

func TestLimitListener(t *testing.T) {
	var closes atomic.Int64
	conn := func() any { return closeCounter{closes: &closes} }
	tests := []struct {
		name                    string
		results                 []any
		maxSandbox, maxAll      int
		heldSandbox, heldAll    int64
		wantAccepted, wantReset int
		wantSleeps              []time.Duration
	}{
		{name: "under both limits", results: []any{conn(), conn()}, maxSandbox: 2, maxAll: 10, wantAccepted: 2},
		{name: "per-sandbox limit resets the rest", results: []any{conn(), conn(), conn(), conn()}, maxSandbox: 1, maxAll: 10,
			wantAccepted: 1, wantReset: 3},
		{name: "global limit", results: []any{conn(), conn(), conn()}, maxSandbox: 10, maxAll: 5, heldAll: 4,
			wantAccepted: 1, wantReset: 2},
		{name: "descriptor shortage backs off, never spins",
			results:    []any{syscall.EMFILE, syscall.EMFILE, syscall.ENFILE, syscall.EMFILE, syscall.EMFILE, syscall.EMFILE, syscall.EMFILE, conn()},
			maxSandbox: 1, maxAll: 1, wantAccepted: 1,
			wantSleeps: []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond,
				80 * time.Millisecond, 160 * time.Millisecond, 250 * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			closes.Store(0)
			var sb, all atomic.Int64
			sb.Store(tc.heldSandbox)
			all.Store(tc.heldAll)
			var sleeps []time.Duration
			l := &limitListener{Listener: &fakeListener{results: tc.results}, sandbox: &sb, all: &all,
				maxSandbox: tc.maxSandbox, maxAll: tc.maxAll, log: slog.New(slog.DiscardHandler),
				sleep: func(d time.Duration) { sleeps = append(sleeps, d) }}
			var got []net.Conn
			for range tc.wantAccepted {
				c, err := l.Accept()
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, c)
			}
			// the rest arrive while the accepted ones are held
			if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Accept once the queue is empty: %v, want net.ErrClosed", err)
			}
			if n := closes.Load(); n != int64(tc.wantReset) {
				t.Errorf("%d connections reset, want %d", n, tc.wantReset)
			}
			if fmt.Sprint(sleeps) != fmt.Sprint(tc.wantSleeps) {
				t.Errorf("backoff %v, want %v", sleeps, tc.wantSleeps)
			}
			if sb.Load() != tc.heldSandbox+int64(len(got)) || all.Load() != tc.heldAll+int64(len(got)) {
				t.Errorf("held %d/%d after accepting %d", sb.Load(), all.Load(), len(got))
			}
			for _, c := range got {
				c.Close()
				c.Close() // twice: released once
			}
			if sb.Load() != tc.heldSandbox || all.Load() != tc.heldAll {
				t.Errorf("after close: held %d/%d, want %d/%d", sb.Load(), all.Load(), tc.heldSandbox, tc.heldAll)
			}
		})
	}
}

// TestTCPConnectionLimitServed: against a real server (the event loop, and
// the library's server with the limit listener that ServeUpstream uses), a
// sandbox holding its limit of idle connections gets the next one reset at
// once, gets a slot back when one closes, and idle connections are closed
// after the read timeout.
func TestTCPConnectionLimitServed(t *testing.T) {
	for _, how := range []string{"loop", "library"} {
		t.Run(how, func(t *testing.T) {
			r := NewResolver(testTable(), Config{MaxTCPConnsPerSandbox: 2, TCPReadTimeout: 300 * time.Millisecond})
			c := newClient(idWeb, forwardAll)
			var addr string
			if how == "loop" {
				_, addr = serveLoop(t, r, c)
			} else {
				ln, err := net.Listen("tcp4", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				srv := &mdns.Server{Listener: r.limit(ln, c), Handler: r.handler(c), ReadTimeout: r.cfg.TCPReadTimeout}
				if err := serve(srv); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = srv.Shutdown() })
				addr = ln.Addr().String()
			}
			checkTCPLimit(t, r, c, addr)
		})
	}
}

func checkTCPLimit(t *testing.T, r *Resolver, c *client, addr string) {
	var held []net.Conn
	for range 2 {
		cn, err := net.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer cn.Close()
		held = append(held, cn)
	}
	waitFor(t, func() bool { return c.tcpConns.Load() == 2 })
	// the reset may come before connect returns, or at the first read
	over, err := net.Dial("tcp4", addr)
	switch {
	case errors.Is(err, syscall.ECONNRESET):
	case err != nil:
		t.Fatal(err)
	default:
		defer over.Close()
		_ = over.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := over.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("third connection over a limit of 2: read %v, want reset or EOF at once", err)
		}
	}
	// the idle ones are closed by the server after the read timeout
	for _, cn := range held {
		_ = cn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := cn.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("idle connection: read %v, want EOF after the read timeout", err)
		}
	}
	waitFor(t, func() bool { return c.tcpConns.Load() == 0 && r.tcpConns.Load() == 0 })
	// slots are back: a query over TCP is answered
	if got := aRecords(query(t, "tcp", addr, "db", mdns.TypeA)); len(got) != 1 {
		t.Errorf("after the idle connections closed: db = %v", got)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not reached in 5 s")
}

// TestForwardPolicy: a sandbox without a way out gets SERVFAIL for
// external names and the upstream receives nothing; its local names still
// resolve. The policy can change while serving.
func TestForwardPolicy(t *testing.T) {
	got := make(chan string, 10)
	r := NewResolver(testTable(), Config{Upstreams: []netip.AddrPort{fakeUpstream(t, got)}})
	c := newClient(idWeb, Policy{Forward: false})
	udp, tcp := serveLoop(t, r, c)
	for _, p := range []struct{ net, addr string }{{"udp", udp}, {"tcp", tcp}} {
		for _, tc := range []struct {
			name  string
			qtype uint16
		}{{"secret-data.example.com", mdns.TypeA}, {"other", mdns.TypeA}, {"9.9.9.203.in-addr.arpa", mdns.TypePTR}, {"example.com", mdns.TypeTXT}} {
			if resp := query(t, p.net, p.addr, tc.name, tc.qtype); resp.Rcode != mdns.RcodeServerFailure || len(resp.Answer) != 0 {
				t.Errorf("%s %s without forwarding: %v, want SERVFAIL", p.net, tc.name, resp)
			}
		}
		if a := aRecords(query(t, p.net, p.addr, "db", mdns.TypeA)); len(a) != 1 {
			t.Errorf("%s: local name without forwarding: %v", p.net, a)
		}
	}
	select {
	case q := <-got:
		t.Fatalf("the upstream received %q from a sandbox that may not forward", q)
	default:
	}
	c.forward.Store(true)
	if a := aRecords(query(t, "udp", udp, "allowed.example", mdns.TypeA)); len(a) != 1 || <-got != "allowed.example." {
		t.Errorf("after the policy allows forwarding: %v", a)
	}
}

// TestPerSandboxInFlight: a sandbox at its own limit of forwarded queries
// gets REFUSED at once; another sandbox still forwards.
func TestPerSandboxInFlight(t *testing.T) {
	arrived, release := make(chan string, 10), make(chan struct{})
	up, _ := startServer(t, mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		if req.Question[0].Name == "hold.example." {
			arrived <- req.Question[0].Name
			<-release
		}
		resp := new(mdns.Msg).SetReply(req)
		resp.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: req.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 1},
			A: net.IPv4(203, 0, 113, 9)}}
		_ = w.WriteMsg(resp)
	}))
	r := NewResolver(testTable(), Config{Upstreams: []netip.AddrPort{netip.MustParseAddrPort(up)}, MaxInFlightPerSandbox: 2, MaxInFlight: 10})
	attUDP, _ := serveLoop(t, r, newClient(idWeb, forwardAll))
	vicUDP, _ := serveLoop(t, r, newClient(idB, forwardAll))
	done := make(chan struct{}, 2)
	for range 2 {
		go func() {
			c := &mdns.Client{Timeout: 10 * time.Second}
			_, _, _ = c.Exchange(new(mdns.Msg).SetQuestion("hold.example.", mdns.TypeA), attUDP)
			done <- struct{}{}
		}()
	}
	<-arrived
	<-arrived
	if resp := query(t, "udp", attUDP, "third.example", mdns.TypeA); resp.Rcode != mdns.RcodeRefused {
		t.Errorf("attacker's third forwarded query: rcode %s, want REFUSED", mdns.RcodeToString[resp.Rcode])
	}
	if a := aRecords(query(t, "udp", vicUDP, "victim.example", mdns.TypeA)); len(a) != 1 {
		t.Errorf("another sandbox's forwarded query while the first is at its limit: %v", a)
	}
	close(release)
	<-done
	<-done
}
