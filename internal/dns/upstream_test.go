package dns

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// serveUpstream serves tb host-wide on 127.0.0.1:<random port> and returns
// the address (UDP and TCP).
func serveUpstream(t *testing.T, tb *Table, c Config) string {
	t.Helper()
	cl, err := NewResolver(tb, c).ServeUpstream(netip.MustParseAddrPort("127.0.0.1:0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl.(*listener).udp.PacketConn.LocalAddr().String()
}

func TestServeUpstream(t *testing.T) {
	got := make(chan string, 10)
	addr := serveUpstream(t, hostTable(), Config{Upstreams: []netip.AddrPort{fakeUpstream(t, got)}})
	for _, tc := range []struct {
		name    string
		qtype   uint16
		want    []string // A records, or the PTR name
		forward bool     // answered by the fake upstream
	}{
		{"db.net-a", mdns.TypeA, []string{"172.18.0.3"}, false},
		{"Svc.Net-A", mdns.TypeA, []string{"172.18.0.2", "172.18.0.3"}, false},
		{"web", mdns.TypeA, []string{"172.18.0.2"}, false},
		{"web", mdns.TypeAAAA, nil, false}, // known name, other type: empty NOERROR
		{"db.net-b", mdns.TypeMX, nil, false},
		{"db", mdns.TypeA, []string{"203.0.113.7"}, true}, // ambiguous
		{idB[:12], mdns.TypeA, []string{"203.0.113.7"}, true},
		{"www.example", mdns.TypeA, []string{"203.0.113.7"}, true},
		{"3.0.19.172.in-addr.arpa", mdns.TypePTR, []string{"db.net-b."}, false},
		{"2.0.20.172.in-addr.arpa", mdns.TypePTR, []string{"x.net-b.net-c."}, false},
		{"8.8.8.8.in-addr.arpa", mdns.TypePTR, nil, true},
	} {
		for _, proto := range []string{"udp", "tcp"} {
			resp := query(t, proto, addr, tc.name, tc.qtype)
			if resp.Rcode != mdns.RcodeSuccess {
				t.Errorf("%s %s over %s: rcode %s", mdns.TypeToString[tc.qtype], tc.name, proto, mdns.RcodeToString[resp.Rcode])
			}
			var ans []string
			if tc.qtype == mdns.TypePTR {
				for _, rr := range resp.Answer {
					ans = append(ans, rr.(*mdns.PTR).Ptr)
				}
			} else {
				ans = aRecords(resp)
			}
			if !slices.Equal(ans, tc.want) || (tc.qtype != mdns.TypeA && tc.qtype != mdns.TypePTR && len(resp.Answer) != 0) {
				t.Errorf("%s %s over %s = %v, want %v", mdns.TypeToString[tc.qtype], tc.name, proto, resp.Answer, tc.want)
			}
			if !tc.forward && !resp.Authoritative {
				t.Errorf("%s %s over %s: local answer without AA", mdns.TypeToString[tc.qtype], tc.name, proto)
			}
			select {
			case q := <-got:
				if !tc.forward || q != mdns.Fqdn(tc.name) {
					t.Errorf("%s %s over %s: upstream got %q (forward expected: %v)", mdns.TypeToString[tc.qtype], tc.name, proto, q, tc.forward)
				}
			default: // a forwarded answer comes after the upstream saw the query
				if tc.forward {
					t.Errorf("%s %s over %s: not forwarded", mdns.TypeToString[tc.qtype], tc.name, proto)
				}
			}
		}
	}
}

// TestServeUpstreamTruncates: a large host-wide answer is truncated over
// UDP and whole over TCP, as for a sandbox.
func TestServeUpstreamTruncates(t *testing.T) {
	tb := NewTable()
	for i := range 100 {
		id := idWeb[:60] + string(rune('a'+i/26)) + string(rune('a'+i%26)) + "00"
		tb.Set(id, []Entry{{Name: "s" + id[60:62], NetworkID: "n", NetworkName: "net", Aliases: []string{"big"},
			Addr: netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)})}})
	}
	addr := serveUpstream(t, tb, Config{})
	if resp := query(t, "udp", addr, "big", mdns.TypeA); !resp.Truncated || len(resp.Answer) >= 100 {
		t.Errorf("UDP: tc=%v with %d answers; want TC and fewer than 100", resp.Truncated, len(resp.Answer))
	}
	if resp := query(t, "tcp", addr, "big.net", mdns.TypeA); resp.Truncated || len(resp.Answer) != 100 {
		t.Errorf("TCP: tc=%v with %d answers; want all 100", resp.Truncated, len(resp.Answer))
	}
}

// TestServeUpstreamLimit: Docker's forwarded queries share the forward
// limits (the whole host counts as one client).
func TestServeUpstreamLimit(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	up, _ := startServer(t, mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		arrived <- struct{}{}
		<-release
		_ = w.WriteMsg(new(mdns.Msg).SetReply(req))
	}))
	addr := serveUpstream(t, hostTable(), Config{Upstreams: []netip.AddrPort{netip.MustParseAddrPort(up)}, MaxInFlightPerSandbox: 1})
	first := make(chan *mdns.Msg, 1)
	go func() {
		c := &mdns.Client{Timeout: 10 * time.Second}
		resp, _, _ := c.Exchange(new(mdns.Msg).SetQuestion("slow.example.", mdns.TypeA), addr)
		first <- resp
	}()
	<-arrived
	if resp := query(t, "udp", addr, "second.example", mdns.TypeA); resp.Rcode != mdns.RcodeRefused {
		t.Errorf("query beyond the limit: rcode %s, want REFUSED", mdns.RcodeToString[resp.Rcode])
	}
	if got := aRecords(query(t, "udp", addr, "web", mdns.TypeA)); len(got) != 1 {
		t.Errorf("local name while the limit is reached = %v", got) // local answers take no slot
	}
	close(release)
	if resp := <-first; resp == nil || resp.Rcode != mdns.RcodeSuccess {
		t.Errorf("first query = %v, want NOERROR", resp)
	}
}

func TestServeUpstreamBadAddress(t *testing.T) {
	r := NewResolver(NewTable(), Config{})
	for _, a := range []string{"0.0.0.0:53", "10.0.0.1:53", "[::]:53", "172.18.0.1:5353"} {
		if cl, err := r.ServeUpstream(netip.MustParseAddrPort(a), nil); err == nil {
			cl.Close()
			t.Errorf("ServeUpstream(%s) accepted a non-loopback address", a)
		}
	}
	if _, err := r.ServeUpstream(netip.AddrPort{}, nil); err == nil {
		t.Error("ServeUpstream(zero address) accepted")
	}
}

// TestServeUpstreamClose: Close releases both sockets (the address can be
// bound again), and a failed start leaves nothing open.
func TestServeUpstreamClose(t *testing.T) {
	r := NewResolver(NewTable(), Config{})
	cl, err := r.ServeUpstream(netip.MustParseAddrPort("127.0.0.1:0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(cl.(*listener).udp.PacketConn.LocalAddr().String())
	if _, err := r.ServeUpstream(ap, nil); err == nil {
		t.Error("second ServeUpstream on a served address succeeded")
	}
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
	_ = cl.Close() // idempotent
	pc, ln, err := listenUDPTCP(ap)
	if err != nil {
		t.Fatalf("address not released by Close: %v", err)
	}
	ln.Close()
	// UDP taken, TCP free: the start fails and leaves the TCP port free
	if _, err := r.ServeUpstream(ap, nil); err == nil {
		t.Fatal("ServeUpstream with its UDP port taken succeeded")
	}
	pc.Close()
	ln2, err := net.Listen("tcp", ap.String())
	if err != nil {
		t.Fatalf("TCP port left open by a failed start: %v", err)
	}
	ln2.Close()
}

// TestServeUpstreamAllow: with a source filter the address may be any;
// sources it refuses get REFUSED and nothing is forwarded for them.
func TestServeUpstreamAllow(t *testing.T) {
	got := make(chan string, 10)
	r := NewResolver(hostTable(), Config{Upstreams: []netip.AddrPort{fakeUpstream(t, got)}})
	for _, tc := range []struct {
		name  string
		allow bool
		want  int
	}{{"refused", false, mdns.RcodeRefused}, {"allowed", true, mdns.RcodeSuccess}} {
		var asked []netip.Addr
		cl, err := r.ServeUpstream(netip.MustParseAddrPort("127.0.0.1:0"), func(a netip.Addr) bool {
			asked = append(asked, a)
			return tc.allow
		})
		if err != nil {
			t.Fatal(err)
		}
		addr := cl.(*listener).udp.PacketConn.LocalAddr().String()
		for _, q := range []string{"web", "www.example"} {
			resp := query(t, "udp", addr, q, mdns.TypeA)
			if resp.Rcode != tc.want {
				t.Errorf("%s: %s answered %s", tc.name, q, mdns.RcodeToString[resp.Rcode])
			}
		}
		cl.Close()
		if len(asked) == 0 || asked[0] != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("%s: the filter saw %v, want the source 127.0.0.1", tc.name, asked)
		}
		select {
		case q := <-got:
			if !tc.allow {
				t.Errorf("a refused source's query %q was forwarded", q)
			}
		default:
			if tc.allow {
				t.Error("an allowed source's unknown name was not forwarded")
			}
		}
	}
	if _, err := r.ServeUpstream(netip.MustParseAddrPort("10.0.0.1:53"), nil); err == nil {
		t.Error("a routable address without a filter was accepted")
	}
}
