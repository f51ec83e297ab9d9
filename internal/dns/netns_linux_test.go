package dns

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// queryIn sends one query to 127.0.0.11:53 from inside the namespace at path.
func queryIn(nsPath, proto, name string, qtype uint16) (*mdns.Msg, error) {
	var resp *mdns.Msg
	err := netns.Do(nsPath, func() error {
		c := &mdns.Client{Net: proto, Timeout: 5 * time.Second}
		var err error
		resp, _, err = c.Exchange(new(mdns.Msg).SetQuestion(mdns.Fqdn(name), qtype), ListenAddr)
		return err
	})
	return resp, err
}

func mustQueryIn(t testing.TB, nsPath, proto, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	resp, err := queryIn(nsPath, proto, name, qtype)
	if err != nil {
		t.Fatalf("query %s over %s in %s: %v", name, proto, filepath.Base(nsPath), err)
	}
	return resp
}

func TestResolverInNamespaces(t *testing.T) {
	dir := testutil.NSDir(t)
	nsWeb, nsOther := testutil.NetNSIn(t, dir), testutil.NetNSIn(t, dir)
	r := NewResolver(testTable(), Config{Upstreams: []netip.AddrPort{fakeUpstream(t, nil)}})
	defer r.Close()
	for _, s := range []struct{ id, ns string }{{idWeb, nsWeb}, {idB, nsOther}, {idWeb, nsWeb}} { // twice: idempotent
		if err := r.Start(s.id, s.ns, forwardAll); err != nil {
			t.Fatal(err)
		}
	}
	for _, proto := range []string{"udp", "tcp"} {
		for _, tc := range []struct {
			ns, name string
			want     []string
		}{
			{nsWeb, "db", []string{"172.18.0.3"}},
			{nsWeb, "svc.net-a", []string{"172.18.0.2", "172.18.0.3"}},
			{nsWeb, "other", []string{"203.0.113.7"}}, // out of scope: forwarded
			{nsWeb, "www.example", []string{"203.0.113.7"}},
			{nsOther, "db", []string{"172.19.0.3"}},
			{nsOther, "other.net-b", []string{"172.19.0.2"}},
			{nsOther, "web", []string{"203.0.113.7"}},
		} {
			if got := aRecords(mustQueryIn(t, tc.ns, proto, tc.name, mdns.TypeA)); !slices.Equal(got, tc.want) {
				t.Errorf("%s %s from %s = %v, want %v", proto, tc.name, filepath.Base(tc.ns), got, tc.want)
			}
		}
	}
	resp := mustQueryIn(t, nsOther, "udp", "2.0.19.172.in-addr.arpa", mdns.TypePTR)
	if len(resp.Answer) != 1 || resp.Answer[0].(*mdns.PTR).Ptr != "other.net-b." {
		t.Errorf("PTR from %s = %v", filepath.Base(nsOther), resp.Answer)
	}

	r.Stop(idWeb)
	r.Stop(idWeb)
	if _, err := queryIn(nsWeb, "tcp", "db", mdns.TypeA); err == nil {
		t.Error("TCP query answered after Stop")
	}
	if _, err := queryIn(nsWeb, "udp", "db", mdns.TypeA); err == nil {
		t.Error("UDP query answered after Stop")
	}
	if got := aRecords(mustQueryIn(t, nsOther, "udp", "db", mdns.TypeA)); len(got) != 1 {
		t.Errorf("other sandbox stopped serving too: %v", got)
	}
	// restart after Stop works (the address is free again)
	if err := r.Start(idWeb, nsWeb, forwardAll); err != nil {
		t.Fatal(err)
	}
	if got := aRecords(mustQueryIn(t, nsWeb, "udp", "db", mdns.TypeA)); len(got) != 1 {
		t.Errorf("after restart: %v", got)
	}
	r.Close()
	if _, err := queryIn(nsOther, "tcp", "db", mdns.TypeA); err == nil {
		t.Error("answered after Close")
	}
}

func TestStartErrors(t *testing.T) {
	dir := testutil.NSDir(t)
	r := NewResolver(NewTable(), Config{})
	defer r.Close()
	if err := r.Start("x", filepath.Join(dir, "missing"), forwardAll); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Start on a missing namespace: %v", err)
	}
	ns := testutil.NetNSIn(t, dir)
	// 127.0.0.11:53 taken in the namespace: Start fails and leaves nothing open
	r2 := NewResolver(NewTable(), Config{})
	if err := r2.Start("y", ns, forwardAll); err != nil {
		t.Fatal(err)
	}
	if err := r.Start("x", ns, forwardAll); err == nil {
		t.Error("Start succeeded with the port already bound")
	}
	r2.Close()
	if err := r.Start("x", ns, forwardAll); err != nil {
		t.Errorf("Start after the port was freed: %v", err)
	}
}

// BenchmarkLocalQPS measures a local name answered to one sandbox: 8
// clients inside its namespace, each with its own UDP socket, send b.N
// queries in all. Reports qps and the p99 latency.
func BenchmarkLocalQPS(b *testing.B) {
	dir := testutil.NSDir(b)
	ns := testutil.NetNSIn(b, dir)
	r := NewResolver(testTable(), Config{})
	defer r.Close()
	if err := r.Start(idWeb, ns, forwardAll); err != nil {
		b.Fatal(err)
	}
	const clients = 8
	conns := make([]*mdns.Conn, clients)
	if err := netns.Do(ns, func() error {
		for i := range conns {
			c, err := mdns.Dial("udp", ListenAddr)
			if err != nil {
				return err
			}
			conns[i] = c
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	lat := make([][]time.Duration, clients)
	errs := make([]error, clients)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range clients {
		n := b.N / clients
		if i < b.N%clients {
			n++
		}
		wg.Go(func() {
			c := &mdns.Client{Timeout: 5 * time.Second}
			m := new(mdns.Msg).SetQuestion("db.net-a.", mdns.TypeA)
			lat[i] = make([]time.Duration, 0, n)
			for range n {
				t0 := time.Now()
				resp, _, err := c.ExchangeWithConn(m, conns[i])
				if err == nil && len(resp.Answer) != 1 {
					err = fmt.Errorf("answer %v", resp)
				}
				if err != nil {
					errs[i] = err
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	for _, c := range conns {
		c.Close()
	}
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "qps")
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	}
}

// BenchmarkMemory1000 starts the resolver in 1000 namespaces, has each
// sandbox resolve a name once, and reports the growth of the process's RSS,
// Go heap and stacks, and goroutines per sandbox (beyond the first, which
// starts the event loop). Run with -benchtime 1x.
func BenchmarkMemory1000(b *testing.B) {
	const n = 1000
	dir := testutil.NSDir(b)
	for range b.N {
		paths := make([]string, n)
		for i := range paths {
			paths[i] = filepath.Join(dir, fmt.Sprintf("m%d-%s", i, testutil.Suffix()))
			if err := netns.Create(paths[i]); err != nil {
				b.Fatal(err)
			}
		}
		tb := testTable()
		r := NewResolver(tb, Config{})
		r.numLoops = 1
		if err := r.Start("first", paths[0], forwardAll); err != nil { // the loop exists before the baseline
			b.Fatal(err)
		}
		m0, g0, rss0 := memNow(b)
		for i, p := range paths[1:] {
			id := fmt.Sprintf("%064x", i)
			tb.Set(id, []Entry{{Name: "s" + strconv.Itoa(i), NetworkID: "na", NetworkName: "net-a", Addr: netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})}})
			if err := r.Start(id, p, forwardAll); err != nil {
				b.Fatal(err)
			}
		}
		for _, p := range paths[1:] {
			if resp, err := queryIn(p, "udp", "db", mdns.TypeA); err != nil || len(resp.Answer) != 1 {
				b.Fatalf("query in %s: %v %v", p, err, resp)
			}
		}
		m1, g1, rss1 := memNow(b)
		b.ReportMetric(float64(rss1-rss0)/1024, "RSS-MB")
		b.ReportMetric(float64(rss1-rss0)/(n-1), "RSS-KB/sandbox")
		b.ReportMetric(float64(m1-m0)/(n-1), "heap+stack-B/sandbox")
		b.ReportMetric(float64(g1-g0)/(n-1), "goroutines/sandbox")
		r.Close()
		var errs []error
		for _, p := range paths {
			errs = append(errs, netns.Delete(p))
		}
		if err := errors.Join(errs...); err != nil {
			b.Fatal(err)
		}
	}
}

// rssKB is the process's resident set (VmRSS) in KiB.
func rssKB(tb testing.TB) int {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}
