package dns

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// forwardAll is the policy of a sandbox with a way out.
var forwardAll = Policy{Forward: true}

// startServer serves h on 127.0.0.1:<random port> over UDP and TCP in the
// test process and returns the two addresses (the same port).
func startServer(t testing.TB, h mdns.Handler) (udp, tcp string) {
	t.Helper()
	return startServerOn(t, "127.0.0.1", h)
}

// startServerOn is startServer on host (an IPv4 or IPv6 loopback address).
func startServerOn(t testing.TB, host string, h mdns.Handler) (udp, tcp string) {
	t.Helper()
	pc, ln := listenPairOn(t, host)
	for _, s := range []*mdns.Server{
		{PacketConn: pc, Handler: h, UDPSize: udpBufSize},
		{Listener: ln, Handler: h},
	} {
		if err := serve(s); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return pc.LocalAddr().String(), ln.Addr().String()
}

// listenPair opens a UDP and a TCP socket on the same random port of
// 127.0.0.1 (as an upstream server has them).
func listenPair(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	return listenPairOn(t, "127.0.0.1")
}

// listenPairOn is listenPair on host.
func listenPairOn(t testing.TB, host string) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err == nil {
			return pc, ln
		}
		ln.Close()
	}
	t.Fatalf("no free UDP+TCP port pair on %s", host)
	return nil, nil
}

// Answers of fakeUpstream.
var (
	upstreamA    = net.IPv4(203, 0, 113, 7)
	upstreamAAAA = net.ParseIP("2001:db8::7")
)

// fakeUpstream answers every A query with 203.0.113.7 and every AAAA query
// with 2001:db8::7 (TTL 42), other types with an empty NOERROR, and names
// 'nx.example.' with NXDOMAIN; it sends each query's name on got.
func fakeUpstream(t testing.TB, got chan<- string) netip.AddrPort {
	return fakeUpstreamOn(t, "127.0.0.1", got)
}

// fakeUpstreamOn is fakeUpstream listening on host.
func fakeUpstreamOn(t testing.TB, host string, got chan<- string) netip.AddrPort {
	udp, _ := startServerOn(t, host, mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		if got != nil {
			got <- req.Question[0].Name
		}
		resp := new(mdns.Msg).SetReply(req)
		q := req.Question[0]
		hdr := mdns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: mdns.ClassINET, Ttl: 42}
		switch {
		case q.Name == "nx.example.":
			resp.Rcode = mdns.RcodeNameError
		case q.Qtype == mdns.TypeA:
			resp.Answer = []mdns.RR{&mdns.A{Hdr: hdr, A: upstreamA}}
		case q.Qtype == mdns.TypeAAAA:
			resp.Answer = []mdns.RR{&mdns.AAAA{Hdr: hdr, AAAA: upstreamAAAA}}
		}
		_ = w.WriteMsg(resp)
	}))
	return netip.MustParseAddrPort(udp)
}

// deadUpstream is a UDP socket that reads and never answers.
func deadUpstream(t testing.TB) netip.AddrPort {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

func query(t testing.TB, net, addr, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	c := &mdns.Client{Net: net, Timeout: 10 * time.Second}
	m := new(mdns.Msg).SetQuestion(mdns.Fqdn(name), qtype)
	resp, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", name, mdns.TypeToString[qtype], net, err)
	}
	return resp
}

func aRecords(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return out
}

// resolverFor serves sandbox src of testTable with config c on the event
// loop.
func resolverFor(t testing.TB, src string, c Config) (udp, tcp string) {
	r := NewResolver(testTable(), c)
	return serveLoop(t, r, newClient(src, forwardAll))
}

// serveLoop serves client c of r on r's event loop through a UDP and a TCP
// socket on one free port of 127.0.0.1 in the test's namespace, as Start
// does with 127.0.0.11:53 inside a sandbox's; the test's end closes them.
func serveLoop(t testing.TB, r *Resolver, c *client) (udp, tcp string) {
	t.Helper()
	addr, stop := serveLoopFDs(t, r, c)
	t.Cleanup(r.Close)
	t.Cleanup(stop)
	return addr, addr
}

// serveLoopFDs is serveLoop without the cleanup: stop closes the sockets.
func serveLoopFDs(t testing.TB, r *Resolver, c *client) (addr string, stop func()) {
	t.Helper()
	var ufd, tfd int
	var err error
	for range 20 { // the UDP port may be taken for TCP: try another
		if ufd, tfd, err = openSockets([4]byte{127, 0, 0, 1}, 0); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(tfd)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	sv, err := r.serveFDs(c, ufd, tfd)
	r.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port)).String(), sv.close
}

func TestLocalAnswers(t *testing.T) {
	udp, tcp := resolverFor(t, idWeb, Config{})
	for _, proto := range []struct{ net, addr string }{{"udp", udp}, {"tcp", tcp}} {
		resp := query(t, proto.net, proto.addr, "db.net-a", mdns.TypeA)
		if resp.Rcode != mdns.RcodeSuccess || !slices.Equal(aRecords(resp), []string{"172.18.0.3"}) {
			t.Fatalf("%s: db.net-a = %v", proto.net, resp)
		}
		if ttl := resp.Answer[0].Header().Ttl; ttl != DefaultTTL {
			t.Errorf("TTL = %d, want %d", ttl, DefaultTTL)
		}
		if !resp.Authoritative || !resp.RecursionAvailable {
			t.Errorf("flags: aa=%v ra=%v", resp.Authoritative, resp.RecursionAvailable)
		}
	}
	if got := aRecords(query(t, "udp", udp, "SVC", mdns.TypeA)); !slices.Equal(got, []string{"172.18.0.2", "172.18.0.3"}) {
		t.Errorf("svc = %v", got)
	}
	// types other than A for a local name: empty NOERROR, nothing forwarded
	for _, qt := range []uint16{mdns.TypeAAAA, mdns.TypeMX, mdns.TypeTXT, mdns.TypeSRV} {
		resp := query(t, "udp", udp, "db", qt)
		if resp.Rcode != mdns.RcodeSuccess || len(resp.Answer) != 0 {
			t.Errorf("%s db: rcode %s, %d answers; want empty NOERROR", mdns.TypeToString[qt], mdns.RcodeToString[resp.Rcode], len(resp.Answer))
		}
	}
	resp := query(t, "udp", udp, "3.0.18.172.in-addr.arpa", mdns.TypePTR)
	if len(resp.Answer) != 1 || resp.Answer[0].(*mdns.PTR).Ptr != "db.net-a." {
		t.Errorf("PTR 172.18.0.3 = %v", resp.Answer)
	}
}

func TestShuffledPerReply(t *testing.T) {
	udp, _ := resolverFor(t, idWeb, Config{})
	firsts := map[string]bool{}
	for range 200 {
		resp := query(t, "udp", udp, "svc", mdns.TypeA)
		if len(resp.Answer) != 2 {
			t.Fatalf("svc: %d answers", len(resp.Answer))
		}
		firsts[resp.Answer[0].(*mdns.A).A.String()] = true
	}
	if len(firsts) != 2 {
		t.Errorf("first answer never changed over 200 replies: %v", firsts)
	}
}

func TestForward(t *testing.T) {
	got := make(chan string, 10)
	udp, tcp := resolverFor(t, idWeb, Config{Upstreams: []netip.AddrPort{fakeUpstream(t, got)}})
	for _, proto := range []struct{ net, addr string }{{"udp", udp}, {"tcp", tcp}} {
		resp := query(t, proto.net, proto.addr, "www.example", mdns.TypeA)
		if !slices.Equal(aRecords(resp), []string{"203.0.113.7"}) || resp.Answer[0].Header().Ttl != 42 {
			t.Errorf("%s: forwarded answer = %v", proto.net, resp)
		}
		if q := <-got; q != "www.example." {
			t.Errorf("upstream got %q", q)
		}
	}
	// a name only on another network is forwarded, never answered locally
	if resp := query(t, "udp", udp, "other", mdns.TypeA); !slices.Equal(aRecords(resp), []string{"203.0.113.7"}) {
		t.Errorf("other (net-b only) = %v, want the upstream's answer", resp)
	}
	<-got
	if resp := query(t, "udp", udp, "nx.example", mdns.TypeA); resp.Rcode != mdns.RcodeNameError {
		t.Errorf("nx.example: rcode %s, want the upstream's NXDOMAIN", mdns.RcodeToString[resp.Rcode])
	}
	<-got
	// a local name with another type is not forwarded
	query(t, "udp", udp, "db", mdns.TypeMX)
	select {
	case q := <-got:
		t.Errorf("MX for a local name forwarded (%q)", q)
	default:
	}
}

func TestForwardFailures(t *testing.T) {
	t.Run("no upstream", func(t *testing.T) {
		udp, _ := resolverFor(t, idWeb, Config{})
		if resp := query(t, "udp", udp, "www.example", mdns.TypeA); resp.Rcode != mdns.RcodeServerFailure {
			t.Errorf("rcode %s, want SERVFAIL", mdns.RcodeToString[resp.Rcode])
		}
	})
	t.Run("upstream down", func(t *testing.T) {
		udp, _ := resolverFor(t, idWeb, Config{Upstreams: []netip.AddrPort{deadUpstream(t)}, Timeout: 100 * time.Millisecond})
		if resp := query(t, "udp", udp, "www.example", mdns.TypeA); resp.Rcode != mdns.RcodeServerFailure {
			t.Errorf("rcode %s, want SERVFAIL", mdns.RcodeToString[resp.Rcode])
		}
		// still serving local names
		if got := aRecords(query(t, "udp", udp, "db", mdns.TypeA)); len(got) != 1 {
			t.Errorf("db after upstream failure = %v", got)
		}
	})
	t.Run("second upstream answers", func(t *testing.T) {
		ups := []netip.AddrPort{deadUpstream(t), fakeUpstream(t, nil)}
		udp, _ := resolverFor(t, idWeb, Config{Upstreams: ups, Timeout: 100 * time.Millisecond})
		if got := aRecords(query(t, "udp", udp, "www.example", mdns.TypeA)); !slices.Equal(got, []string{"203.0.113.7"}) {
			t.Errorf("answer = %v, want the second upstream's", got)
		}
	})
}

func TestInFlightLimit(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	up, _ := startServer(t, mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		arrived <- struct{}{}
		<-release
		_ = w.WriteMsg(new(mdns.Msg).SetReply(req))
	}))
	udp, _ := resolverFor(t, idWeb, Config{Upstreams: []netip.AddrPort{netip.MustParseAddrPort(up)}, MaxInFlight: 1})
	first := make(chan *mdns.Msg, 1)
	go func() {
		c := &mdns.Client{Timeout: 10 * time.Second}
		resp, _, _ := c.Exchange(new(mdns.Msg).SetQuestion("slow.example.", mdns.TypeA), udp)
		first <- resp
	}()
	<-arrived // the first query holds the only slot
	if resp := query(t, "udp", udp, "second.example", mdns.TypeA); resp.Rcode != mdns.RcodeRefused {
		t.Errorf("query beyond the limit: rcode %s, want REFUSED", mdns.RcodeToString[resp.Rcode])
	}
	close(release)
	if resp := <-first; resp == nil || resp.Rcode != mdns.RcodeSuccess {
		t.Errorf("first query = %v, want NOERROR", resp)
	}
}

func TestLargeAnswerTruncatedOverUDP(t *testing.T) {
	tb := NewTable()
	for i := range 100 {
		id := fmt.Sprintf("%064x", i+1)
		tb.Set(id, []Entry{{Name: fmt.Sprintf("s%d", i), NetworkID: "n", NetworkName: "net", Aliases: []string{"big"},
			Addr: netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)})}})
	}
	udp, tcp := serveLoop(t, NewResolver(tb, Config{}), newClient(fmt.Sprintf("%064x", 1), forwardAll))
	resp := query(t, "udp", udp, "big", mdns.TypeA)
	if !resp.Truncated || len(resp.Answer) >= 100 {
		t.Errorf("UDP: tc=%v with %d answers; want TC and fewer than 100", resp.Truncated, len(resp.Answer))
	}
	resp.Compress = true // as sent
	if resp.Len() > mdns.MinMsgSize {
		t.Errorf("UDP answer is %d bytes, client accepts 512", resp.Len())
	}
	resp = query(t, "tcp", tcp, "big", mdns.TypeA)
	if resp.Truncated || len(resp.Answer) != 100 {
		t.Errorf("TCP: tc=%v with %d answers; want all 100", resp.Truncated, len(resp.Answer))
	}
	// EDNS0 client with a 4096-byte buffer gets everything over UDP
	c := &mdns.Client{Timeout: 10 * time.Second, UDPSize: 4096}
	m := new(mdns.Msg).SetQuestion("big.", mdns.TypeA)
	m.SetEdns0(4096, false)
	r, _, err := c.Exchange(m, udp)
	if err != nil || r.Truncated || len(r.Answer) != 100 {
		t.Errorf("EDNS0 UDP: err %v, %v", err, r)
	}
}

func TestMalformedIgnored(t *testing.T) {
	udp, tcp := resolverFor(t, idWeb, Config{})
	c, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, junk := range [][]byte{
		{0x01},
		[]byte("not a dns packet at all, longer than a header"),
		{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 'w', 'w'}, // truncated question
		{0x12, 0x34, 0x81, 0x80, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},                 // a response
	} {
		if _, err := c.Write(junk); err != nil {
			t.Fatal(err)
		}
	}
	tc, err := net.Dial("tcp", tcp)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = tc.Write([]byte{0x00, 0x05, 'j', 'u', 'n', 'k', '!'})
	tc.Close()
	for _, proto := range []struct{ net, addr string }{{"udp", udp}, {"tcp", tcp}} {
		if got := aRecords(query(t, proto.net, proto.addr, "db", mdns.TypeA)); len(got) != 1 {
			t.Errorf("%s: db after junk = %v", proto.net, got)
		}
	}
}
