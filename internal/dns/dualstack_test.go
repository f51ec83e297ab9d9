package dns

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// dualTable is testTable with web also on a dual-stack network (net-d) and
// an IPv6-only one (net-6): on net-d "dual" (both families, alias "pair"),
// on net-6 "six" (IPv6 only, alias "pair"). From web: "db" is IPv4-only,
// "six" IPv6-only, "dual" dual-stack, "pair" an alias on both new networks.
func dualTable() *Table {
	tb := testTable()
	tb.Set(idWeb, []Entry{
		{Name: "web", NetworkID: "na", NetworkName: "net-a", Aliases: []string{"front", "svc"}, Addr: ip("172.18.0.2")},
		{Name: "web", NetworkID: "nd", NetworkName: "net-d", Addr: ip("172.30.0.2"), Addr6: ip("fd00:d::2")},
		{Name: "web", NetworkID: "n6", NetworkName: "net-6", Addr6: ip("fd00:6::2")},
	})
	tb.Set(idC, []Entry{{Name: "dual", NetworkID: "nd", NetworkName: "net-d", Aliases: []string{"pair"},
		Addr: ip("172.30.0.3"), Addr6: ip("fd00:d::3")}})
	tb.Set(idD, []Entry{{Name: "six", NetworkID: "n6", NetworkName: "net-6", Aliases: []string{"pair"},
		Addr6: ip("fd00:6::3")}})
	return tb
}

func TestLookupDualStack(t *testing.T) {
	tb := dualTable()
	for _, tc := range []struct {
		src, name string
		want      []string
		known     bool
	}{
		{idWeb, "dual", []string{"172.30.0.3", "fd00:d::3"}, true},
		{idWeb, "DUAL.net-d.", []string{"172.30.0.3", "fd00:d::3"}, true},
		{idWeb, "six", []string{"fd00:6::3"}, true},
		{idWeb, "pair", []string{"172.30.0.3", "fd00:6::3", "fd00:d::3"}, true},
		{idWeb, "pair.net-6", []string{"fd00:6::3"}, true},
		{idWeb, idD[:12], []string{"fd00:6::3"}, true},
		{idWeb, "db", []string{"172.18.0.3"}, true},
		{idWeb, "web", []string{"172.18.0.2", "172.30.0.2", "fd00:6::2", "fd00:d::2"}, true},
		{idD, "web", []string{"fd00:6::2"}, true},
		{idD, "dual", nil, false}, // six is on net-6 only
		{idB, "six", nil, false},
	} {
		got, known := tb.Lookup(tc.src, tc.name)
		if gs := sorted(got); known != tc.known || !slices.Equal(gs, tc.want) {
			t.Errorf("Lookup(%.6s, %q) = %v, %v; want %v, %v", tc.src, tc.name, gs, known, tc.want, tc.known)
		}
	}
}

func TestLookupHostDualStack(t *testing.T) {
	tb := dualTable()
	for _, tc := range []struct {
		name  string
		want  []string
		known bool
	}{
		{"six", []string{"fd00:6::3"}, true},
		{"dual.net-d", []string{"172.30.0.3", "fd00:d::3"}, true},
		{"pair.net-6", []string{"fd00:6::3"}, true},
		{"pair", nil, false}, // on net-d and net-6: ambiguous
	} {
		got, known := tb.LookupHost(tc.name)
		if gs := sorted(got); known != tc.known || !slices.Equal(gs, tc.want) {
			t.Errorf("LookupHost(%q) = %v, %v; want %v, %v", tc.name, gs, known, tc.want, tc.known)
		}
	}
}

func TestReverseIPv6(t *testing.T) {
	tb := dualTable()
	for _, tc := range []struct {
		src, addr, want string
		ok              bool
	}{
		{idWeb, "fd00:d::3", "dual.net-d", true},
		{idWeb, "172.30.0.3", "dual.net-d", true},
		{idWeb, "fd00:6::3", "six.net-6", true},
		{idD, "fd00:6::2", "web.net-6", true},
		{idD, "fd00:d::2", "", false}, // net-d is not six's
		{idB, "fd00:6::3", "", false},
		{idWeb, "2001:db8::1", "", false},
	} {
		got, ok := tb.Reverse(tc.src, ip(tc.addr))
		if got != tc.want || ok != tc.ok {
			t.Errorf("Reverse(%.6s, %s) = %q, %v; want %q, %v", tc.src, tc.addr, got, ok, tc.want, tc.ok)
		}
	}
	if got, ok := tb.ReverseHost(ip("fd00:d::2")); got != "web.net-d" || !ok {
		t.Errorf("ReverseHost(fd00:d::2) = %q, %v", got, ok)
	}
}

func TestSetRemoveIPv6(t *testing.T) {
	tb := dualTable()
	// dual is renumbered: the old IPv6 PTR goes, the new one answers
	tb.Set(idC, []Entry{{Name: "dual", NetworkID: "nd", NetworkName: "net-d", Addr: ip("172.30.0.3"), Addr6: ip("fd00:d::33")}})
	if _, ok := tb.Reverse(idWeb, ip("fd00:d::3")); ok {
		t.Error("old IPv6 PTR still answers after Set")
	}
	if got, ok := tb.Reverse(idWeb, ip("fd00:d::33")); got != "dual.net-d" || !ok {
		t.Errorf("new IPv6 PTR = %q, %v", got, ok)
	}
	for _, id := range []string{idWeb, idDB, idB, idC, idD} {
		tb.Remove(id)
	}
	if len(tb.nets) != 0 || len(tb.sandboxes) != 0 {
		t.Errorf("table not empty after removing everything: %d nets, %d sandboxes", len(tb.nets), len(tb.sandboxes))
	}
}

func TestParseReverse6(t *testing.T) {
	const fd = "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.0.0.0.0.0.d.f"
	for _, tc := range []struct {
		name string
		want string // "" = not an address
	}{
		{fd + ".ip6.arpa.", "fd00:d::3"},
		{"3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.D.0.0.0.0.0.D.F.IP6.ARPA", "fd00:d::3"},
		{"b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa.", "4321:0:1:2:3:4:567:89ab"},
		{"3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.0.0.0.0.0.d.ip6.arpa.", ""}, // 31 nibbles: a zone
		{"0." + fd + ".ip6.arpa.", ""}, // 33
		{"03.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.0.0.0.0.0.d.f.ip6.arpa.", ""}, // a 2-char label
		{"g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.0.0.0.0.0.d.f.ip6.arpa.", ""},
		{"+.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.0.0.0.0.0.d.f.ip6.arpa.", ""},
		{"ip6.arpa.", ""},
		{fd + ".ip6.arpa.example.", ""},
	} {
		a, ok := parseReverse(tc.name)
		if tc.want == "" {
			if ok {
				t.Errorf("parseReverse(%q) = %v, want no address", tc.name, a)
			}
			continue
		}
		if !ok || a != ip(tc.want) {
			t.Errorf("parseReverse(%q) = %v, %v; want %s", tc.name, a, ok, tc.want)
		}
	}
	// round trip with the library's own reverse form
	for _, s := range []string{"fd00:d::3", "2001:db8:1:2:3:4:5:6", "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
		name, err := mdns.ReverseAddr(s)
		if err != nil {
			t.Fatal(err)
		}
		if a, ok := parseReverse(name); !ok || a != ip(s) {
			t.Errorf("parseReverse(ReverseAddr(%s)) = %v, %v", s, a, ok)
		}
	}
}

// answers are the A, AAAA and PTR data of m, sorted.
func answers(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *mdns.A:
			out = append(out, r.A.String())
		case *mdns.AAAA:
			out = append(out, r.AAAA.String())
		case *mdns.PTR:
			out = append(out, r.Ptr)
		}
	}
	slices.Sort(out)
	return out
}

func reverseName(t *testing.T, addr string) string {
	t.Helper()
	name, err := mdns.ReverseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// TestAnswersDualStack: A and AAAA of local names answer their family only,
// a known name without the family asked for is NODATA (never forwarded),
// ip6.arpa PTR answers local addresses, and the rest is forwarded.
func TestAnswersDualStack(t *testing.T) {
	got := make(chan string, 10)
	r := NewResolver(dualTable(), Config{Upstreams: []netip.AddrPort{fakeUpstream(t, got)}})
	udp, tcp := startServer(t, r.handler(newClient(idWeb, forwardAll)))
	for _, tc := range []struct {
		name      string
		qtype     uint16
		want      []string
		forwarded bool
	}{
		{"dual", mdns.TypeAAAA, []string{"fd00:d::3"}, false},
		{"dual.net-d", mdns.TypeA, []string{"172.30.0.3"}, false},
		{"db", mdns.TypeAAAA, nil, false}, // IPv4-only name: NODATA
		{"six", mdns.TypeA, nil, false},   // IPv6-only name: NODATA
		{"six", mdns.TypeAAAA, []string{"fd00:6::3"}, false},
		{"pair", mdns.TypeAAAA, []string{"fd00:6::3", "fd00:d::3"}, false},
		{"pair", mdns.TypeA, []string{"172.30.0.3"}, false},
		{"pair.net-6", mdns.TypeA, nil, false},
		{"svc", mdns.TypeAAAA, nil, false},
		{idC[:12], mdns.TypeAAAA, []string{"fd00:d::3"}, false},
		{reverseName(t, "fd00:d::3"), mdns.TypePTR, []string{"dual.net-d."}, false},
		{reverseName(t, "fd00:6::2"), mdns.TypePTR, []string{"web.net-6."}, false},
		{reverseName(t, "172.30.0.3"), mdns.TypePTR, []string{"dual.net-d."}, false},
		// forwarded: unknown names, addresses not local, malformed ip6.arpa
		{"www.example", mdns.TypeAAAA, []string{"2001:db8::7"}, true},
		{"other", mdns.TypeAAAA, []string{"2001:db8::7"}, true}, // net-b only
		{reverseName(t, "2001:db8::1"), mdns.TypePTR, nil, true},
		{"3.0.0.0.e.1.c.a.f.f.f.f" + strings.Repeat(".0", 20) + ".ip6.arpa", mdns.TypePTR, nil, true}, // ::ffff:172.30.0.3 is not the IPv4 record
		{"d.0.0.0.0.0.d.f.ip6.arpa", mdns.TypePTR, nil, true},
		{"x.y.ip6.arpa", mdns.TypePTR, nil, true},
	} {
		for _, p := range []struct{ net, addr string }{{"udp", udp}, {"tcp", tcp}} {
			resp := query(t, p.net, p.addr, tc.name, tc.qtype)
			if resp.Rcode != mdns.RcodeSuccess || !slices.Equal(answers(resp), tc.want) {
				t.Errorf("%s %s over %s: %s %v; want NOERROR %v", mdns.TypeToString[tc.qtype], tc.name, p.net,
					mdns.RcodeToString[resp.Rcode], answers(resp), tc.want)
			}
			if !tc.forwarded && !resp.Authoritative {
				t.Errorf("%s %s: local answer without AA", mdns.TypeToString[tc.qtype], tc.name)
			}
			select {
			case q := <-got:
				if !tc.forwarded {
					t.Errorf("%s %s forwarded (%q)", mdns.TypeToString[tc.qtype], tc.name, q)
				}
			default:
				if tc.forwarded {
					t.Errorf("%s %s not forwarded", mdns.TypeToString[tc.qtype], tc.name)
				}
			}
		}
	}
	for _, rr := range query(t, "udp", udp, "six", mdns.TypeAAAA).Answer {
		if h := rr.Header(); h.Rrtype != mdns.TypeAAAA || h.Ttl != DefaultTTL || h.Name != "six." {
			t.Errorf("AAAA header = %+v", h)
		}
	}
}

// TestAnswersDualStackNoForward: a sandbox with no way out gets its IPv6
// names and SERVFAIL, with nothing sent, for an unknown ip6.arpa name.
func TestAnswersDualStackNoForward(t *testing.T) {
	got := make(chan string, 10)
	r := NewResolver(dualTable(), Config{Upstreams: []netip.AddrPort{fakeUpstream(t, got)}})
	udp, _ := startServer(t, r.handler(newClient(idWeb, Policy{})))
	if resp := query(t, "udp", udp, "six", mdns.TypeAAAA); !slices.Equal(answers(resp), []string{"fd00:6::3"}) {
		t.Errorf("AAAA six = %v", resp)
	}
	for _, qt := range []uint16{mdns.TypeAAAA, mdns.TypePTR} {
		name := "www.example"
		if qt == mdns.TypePTR {
			name = reverseName(t, "2001:db8::1")
		}
		if resp := query(t, "udp", udp, name, qt); resp.Rcode != mdns.RcodeServerFailure {
			t.Errorf("%s %s: rcode %s, want SERVFAIL", mdns.TypeToString[qt], name, mdns.RcodeToString[resp.Rcode])
		}
	}
	select {
	case q := <-got:
		t.Errorf("query %q sent upstream for a sandbox with no way out", q)
	default:
	}
}

// requireV6Loopback skips the test when ::1 cannot be bound (IPv6 disabled
// in this namespace).
func requireV6Loopback(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	ln.Close()
}

// TestForwardIPv6Upstream: an upstream at [::1] is used over UDP and TCP,
// for AAAA, A and PTR alike.
func TestForwardIPv6Upstream(t *testing.T) {
	requireV6Loopback(t)
	got := make(chan string, 10)
	up := fakeUpstreamOn(t, "::1", got)
	if !up.Addr().Is6() {
		t.Fatalf("upstream at %s, want an IPv6 address", up)
	}
	// port 0 in the config: withDefaults must keep the IPv6 address
	if c := (Config{Upstreams: []netip.AddrPort{netip.AddrPortFrom(ip("2001:db8::53"), 0)}}).withDefaults(); len(c.Upstreams) != 1 ||
		c.Upstreams[0].String() != "[2001:db8::53]:53" {
		t.Errorf("withDefaults IPv6 upstream = %v", c.Upstreams)
	}
	udp, tcp := resolverForTable(t, dualTable(), idWeb, Config{Upstreams: []netip.AddrPort{up}})
	for _, tc := range []struct {
		name  string
		qtype uint16
		want  []string
	}{
		{"www.example", mdns.TypeAAAA, []string{"2001:db8::7"}},
		{"www.example", mdns.TypeA, []string{"203.0.113.7"}},
		{reverseName(t, "2001:db8::1"), mdns.TypePTR, nil},
	} {
		for _, p := range []struct{ net, addr string }{{"udp", udp}, {"tcp", tcp}} {
			resp := query(t, p.net, p.addr, tc.name, tc.qtype)
			if resp.Rcode != mdns.RcodeSuccess || !slices.Equal(answers(resp), tc.want) {
				t.Errorf("%s %s over %s via [::1]: %s %v; want %v", mdns.TypeToString[tc.qtype], tc.name, p.net,
					mdns.RcodeToString[resp.Rcode], answers(resp), tc.want)
			}
			select {
			case q := <-got:
				if q != mdns.Fqdn(tc.name) {
					t.Errorf("upstream got %q, want %q", q, mdns.Fqdn(tc.name))
				}
			default:
				t.Errorf("%s %s over %s: the IPv6 upstream saw nothing", mdns.TypeToString[tc.qtype], tc.name, p.net)
			}
		}
	}
}

// TestForwardIPv6UpstreamFallback: a dead IPv4 upstream is skipped for the
// IPv6 one after it.
func TestForwardIPv6UpstreamFallback(t *testing.T) {
	requireV6Loopback(t)
	ups := []netip.AddrPort{deadUpstream(t), fakeUpstreamOn(t, "::1", nil)}
	udp, _ := resolverForTable(t, dualTable(), idWeb, Config{Upstreams: ups, Timeout: 100 * time.Millisecond})
	if got := answers(query(t, "udp", udp, "www.example", mdns.TypeAAAA)); !slices.Equal(got, []string{"2001:db8::7"}) {
		t.Errorf("answer = %v, want the IPv6 upstream's", got)
	}
}

// resolverForTable serves sandbox src of tb with config c.
func resolverForTable(t testing.TB, tb *Table, src string, c Config) (udp, tcp string) {
	return startServer(t, NewResolver(tb, c).handler(newClient(src, forwardAll)))
}

// TestServeUpstreamDualStack: Docker's resolver, asking on an IPv6
// loopback address, gets AAAA and ip6.arpa PTR answers host-wide.
func TestServeUpstreamDualStack(t *testing.T) {
	requireV6Loopback(t)
	got := make(chan string, 10)
	r := NewResolver(dualTable(), Config{Upstreams: []netip.AddrPort{fakeUpstream(t, got)}})
	cl, err := r.ServeUpstream(netip.MustParseAddrPort("[::1]:0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	addr := cl.(*listener).udp.PacketConn.LocalAddr().String()
	for _, tc := range []struct {
		name      string
		qtype     uint16
		want      []string
		forwarded bool
	}{
		{"six", mdns.TypeAAAA, []string{"fd00:6::3"}, false},
		{"six", mdns.TypeA, nil, false},
		{"dual.net-d", mdns.TypeAAAA, []string{"fd00:d::3"}, false},
		{"db.net-a", mdns.TypeAAAA, nil, false},
		{"pair", mdns.TypeAAAA, []string{"2001:db8::7"}, true}, // on two networks: ambiguous
		{reverseName(t, "fd00:d::3"), mdns.TypePTR, []string{"dual.net-d."}, false},
		{reverseName(t, "2001:db8::1"), mdns.TypePTR, nil, true},
	} {
		for _, proto := range []string{"udp", "tcp"} {
			resp := query(t, proto, addr, tc.name, tc.qtype)
			if resp.Rcode != mdns.RcodeSuccess || !slices.Equal(answers(resp), tc.want) {
				t.Errorf("%s %s over %s: %s %v; want NOERROR %v", mdns.TypeToString[tc.qtype], tc.name, proto,
					mdns.RcodeToString[resp.Rcode], answers(resp), tc.want)
			}
			select {
			case <-got:
				if !tc.forwarded {
					t.Errorf("%s %s over %s forwarded", mdns.TypeToString[tc.qtype], tc.name, proto)
				}
			default:
				if tc.forwarded {
					t.Errorf("%s %s over %s not forwarded", mdns.TypeToString[tc.qtype], tc.name, proto)
				}
			}
		}
	}
}
