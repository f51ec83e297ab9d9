package dns

import (
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// TestIdleClientsHoldNoGoroutine: serving 200 more clients adds no
// goroutine (the event loops serve their sockets), and each one answers.
func TestIdleClientsHoldNoGoroutine(t *testing.T) {
	r := NewResolver(testTable(), Config{})
	r.numLoops = 2
	serveLoop(t, r, newClient(idWeb, forwardAll)) // starts the loops
	runtime.GC()
	before := runtime.NumGoroutine()
	var addrs []string
	for range 200 {
		udp, _ := serveLoop(t, r, newClient(idWeb, forwardAll))
		addrs = append(addrs, udp)
	}
	if after := runtime.NumGoroutine(); after > before+2 {
		t.Errorf("%d goroutines after serving 200 more clients, %d before", after, before)
	}
	for _, a := range []string{addrs[0], addrs[99], addrs[199]} {
		for _, proto := range []string{"udp", "tcp"} {
			if got := aRecords(query(t, proto, a, "db", mdns.TypeA)); len(got) != 1 {
				t.Errorf("%s %s: db = %v", proto, a, got)
			}
		}
	}
}

// TestStopClosesConnections: stopping a client closes its open TCP
// connections at once (not at their idle timeout) and its sockets; the
// other clients of the loop keep answering.
func TestStopClosesConnections(t *testing.T) {
	r := NewResolver(testTable(), Config{TCPReadTimeout: time.Minute, TCPIdleTimeout: time.Minute})
	r.numLoops = 1
	c := newClient(idWeb, forwardAll)
	addr, stop := serveLoopFDs(t, r, c)
	other, _ := serveLoop(t, r, newClient(idB, forwardAll))
	conn, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFor(t, func() bool { return c.tcpConns.Load() == 1 })
	stop()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("open connection after stop: read %v, want EOF", err)
	}
	waitFor(t, func() bool { return c.tcpConns.Load() == 0 && r.tcpConns.Load() == 0 })
	if _, err := net.Dial("tcp4", addr); err == nil {
		t.Error("TCP connect after stop succeeded")
	}
	cl := &mdns.Client{Timeout: time.Second}
	if _, _, err := cl.Exchange(new(mdns.Msg).SetQuestion("db.", mdns.TypeA), addr); err == nil {
		t.Error("UDP answered after stop")
	}
	if got := aRecords(query(t, "udp", other, "other", mdns.TypeA)); len(got) != 1 {
		t.Errorf("another client after the stop: %v", got)
	}
}

// BenchmarkIdleClients measures what an idle client costs the resolver:
// 1000 clients served on the loops (sockets on 127.0.0.1, no namespace
// needed), each asked once; reports heap+stack bytes, goroutines and RSS
// per client. Run with -benchtime 1x.
func BenchmarkIdleClients(b *testing.B) {
	const n = 1000
	for range b.N {
		r := NewResolver(testTable(), Config{})
		serveLoop(b, r, newClient(idWeb, forwardAll)) // the loops exist before the baseline
		m0, g0, rss0 := memNow(b)
		var addrs []string
		for range n {
			a, stop := serveLoopFDs(b, r, newClient(idWeb, forwardAll))
			b.Cleanup(stop)
			addrs = append(addrs, a)
		}
		for _, a := range addrs {
			if got := aRecords(query(b, "udp", a, "db", mdns.TypeA)); len(got) != 1 {
				b.Fatalf("%s: %v", a, got)
			}
		}
		m1, g1, rss1 := memNow(b)
		b.ReportMetric(float64(m1-m0)/n, "heap+stack-B/client")
		b.ReportMetric(float64(g1-g0)/n, "goroutines/client")
		b.ReportMetric(float64(rss1-rss0)*1024/n, "RSS-B/client")
	}
}

// memNow is the heap and stack in use after a GC, the goroutine count and
// the RSS (KiB).
func memNow(tb testing.TB) (uint64, int, int) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse, runtime.NumGoroutine(), rssKB(tb)
}
