package dns

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// Any process in a sandbox can send the resolver any bytes, and an upstream
// (or whoever spoofs it) can answer anything. The fuzz targets check that
// no query and no upstream answer crashes the daemon, that an answer is
// always one well-formed message with the query's ID that fits the client's
// UDP size, and that the resolver keeps answering afterwards.

// fuzzUpstream is an upstream server, shared by the iterations of one fuzz
// process, that answers whatever bytes were last set, with the query's ID.
type fuzzUpstream struct {
	mu     sync.Mutex
	answer []byte
	addr   string
}

var (
	upstreamOnce sync.Once
	upstream     fuzzUpstream
)

func (u *fuzzUpstream) set(b []byte) {
	u.mu.Lock()
	u.answer = b
	u.mu.Unlock()
}

// ServeDNS writes the raw answer with the query's ID in its first 2 bytes.
func (u *fuzzUpstream) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	u.mu.Lock()
	b := append([]byte(nil), u.answer...)
	u.mu.Unlock()
	if len(b) >= 2 {
		binary.BigEndian.PutUint16(b, req.Id)
	}
	_, _ = w.Write(b)
}

// startUpstream serves the shared fuzz upstream on 127.0.0.1 (UDP and TCP,
// one port) for the whole process.
func startUpstream(t testing.TB) string {
	upstreamOnce.Do(func() {
		pc, ln := listenPair(t)
		for _, s := range []*mdns.Server{{PacketConn: pc, Handler: &upstream}, {Listener: ln, Handler: &upstream}} {
			if err := serve(s); err != nil {
				t.Fatal(err)
			}
		}
		upstream.addr = pc.LocalAddr().String()
	})
	return upstream.addr
}

// capture is a ResponseWriter that keeps what the resolver writes.
type capture struct {
	tcp    bool
	msgs   []*mdns.Msg
	closed bool
}

func (c *capture) LocalAddr() net.Addr {
	if c.tcp {
		return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 11), Port: 53}
	}
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 11), Port: 53}
}
func (c *capture) RemoteAddr() net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (c *capture) WriteMsg(m *mdns.Msg) error {
	c.msgs = append(c.msgs, m)
	return nil
}
func (c *capture) Write(b []byte) (int, error) {
	m := new(mdns.Msg)
	if err := m.Unpack(b); err != nil {
		return 0, err
	}
	c.msgs = append(c.msgs, m)
	return len(b), nil
}
func (c *capture) Close() error        { c.closed = true; return nil }
func (c *capture) TsigStatus() error   { return nil }
func (c *capture) TsigTimersOnly(bool) {}
func (c *capture) Hijack()             {}

// fuzzQuery builds a well-formed query (the seeds).
func fuzzQuery(name string, qtype uint16, edns uint16) []byte {
	m := new(mdns.Msg).SetQuestion(mdns.Fqdn(name), qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

// fuzzAnswer builds an upstream answer with n A records (the seeds).
func fuzzAnswer(n int) []byte {
	m := new(mdns.Msg).SetQuestion("example.com.", mdns.TypeA)
	m.Response = true
	for i := range n {
		m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: "example.com.", Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 1},
			A: net.IPv4(203, 0, 113, byte(i))})
	}
	b, _ := m.Pack()
	return b
}

// fuzzAnswer6 builds an upstream answer with n AAAA records (the seeds).
func fuzzAnswer6(n int) []byte {
	m := new(mdns.Msg).SetQuestion("example.com.", mdns.TypeAAAA)
	m.Response = true
	for i := range n {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)})
		m.Answer = append(m.Answer, &mdns.AAAA{Hdr: mdns.RR_Header{Name: "example.com.", Rrtype: mdns.TypeAAAA, Class: mdns.ClassINET, Ttl: 1},
			AAAA: a.AsSlice()})
	}
	b, _ := m.Pack()
	return b
}

func addQuerySeeds(f *testing.F, add func(q []byte)) {
	for _, q := range [][]byte{
		fuzzQuery("db", mdns.TypeA, 0), fuzzQuery("db.net-a", mdns.TypeAAAA, 0), fuzzQuery("svc", mdns.TypeA, 4096),
		fuzzQuery("3.0.18.172.in-addr.arpa", mdns.TypePTR, 0), fuzzQuery("1.2.3.4.5.in-addr.arpa", mdns.TypePTR, 0),
		fuzzQuery("example.com", mdns.TypeA, 0), fuzzQuery("example.com", mdns.TypeTXT, 1232), fuzzQuery(".", mdns.TypeANY, 0),
		// IPv6: AAAA of dual-stack, IPv4-only, IPv6-only and outside names, A of an IPv6-only name,
		// ip6.arpa PTR of a local and an outside address, and malformed ip6.arpa names
		fuzzQuery("dual", mdns.TypeAAAA, 0), fuzzQuery("db", mdns.TypeAAAA, 0), fuzzQuery("pair", mdns.TypeAAAA, 1232),
		fuzzQuery("six", mdns.TypeA, 0), fuzzQuery("example.com", mdns.TypeAAAA, 0),
		fuzzQuery("3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.0.0.0.0.0.d.f.ip6.arpa", mdns.TypePTR, 0),
		fuzzQuery("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", mdns.TypePTR, 0),
		fuzzQuery("d.0.0.0.0.0.d.f.ip6.arpa", mdns.TypePTR, 0), fuzzQuery("zz.0.ip6.arpa", mdns.TypePTR, 0),
		{0x01}, []byte("not a dns packet at all, longer than a header"),
		{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 'w', 'w'},
		{0x12, 0x34, 0x81, 0x80, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},
		{0x12, 0x34, 0x01, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01},
		{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01}, // self-pointing name
	} {
		add(q)
	}
}

// FuzzResolverMessage: any bytes as a query, decoded as the server does,
// answered in process over "UDP" or "TCP", with any bytes as the
// upstream's answer when the name is forwarded.
func FuzzResolverMessage(f *testing.F) {
	addQuerySeeds(f, func(q []byte) {
		f.Add(q, false, fuzzAnswer(1))
		f.Add(q, true, fuzzAnswer(200))
	})
	f.Add(fuzzQuery("example.com", mdns.TypeAAAA, 0), false, fuzzAnswer6(1))
	f.Add(fuzzQuery("example.com", mdns.TypeAAAA, 0), false, fuzzAnswer6(100))
	f.Add(fuzzQuery("example.com", mdns.TypeA, 0), false, []byte{})
	f.Add(fuzzQuery("example.com", mdns.TypeA, 0), false, []byte{0, 0, 0x81, 0x82})
	f.Fuzz(func(t *testing.T, query []byte, tcp bool, answer []byte) {
		up := startUpstream(t)
		upstream.set(answer)
		req := new(mdns.Msg)
		if req.Unpack(query) != nil {
			return // the server drops what it cannot decode
		}
		r := NewResolver(dualTable(), Config{Upstreams: []netip.AddrPort{netip.MustParseAddrPort(up)}, Timeout: 200 * time.Millisecond})
		w := &capture{tcp: tcp}
		r.serve(newClient(idWeb, forwardAll), w, req)
		if len(w.msgs) > 1 {
			t.Fatalf("%d answers to one query", len(w.msgs))
		}
		if len(w.msgs) == 0 {
			return
		}
		resp := w.msgs[0]
		if resp.Id != req.Id {
			t.Fatalf("answer ID %d, query ID %d", resp.Id, req.Id)
		}
		b, err := resp.Pack()
		if err != nil {
			return // the server would fail to send it (and log it); nothing is sent
		}
		if !tcp {
			limit := mdns.MinMsgSize
			if opt := req.IsEdns0(); opt != nil {
				limit = min(max(int(opt.UDPSize()), mdns.MinMsgSize), udpBufSize)
			}
			if len(b) > limit {
				t.Fatalf("UDP answer of %d bytes, the client takes %d", len(b), limit)
			}
		}
	})
}

// FuzzResolverWire: any bytes sent to a resolver serving on loopback, as a
// UDP datagram and as a TCP stream (its first two bytes the length prefix);
// the resolver must still answer a local name over both afterwards.
func FuzzResolverWire(f *testing.F) {
	addQuerySeeds(f, func(q []byte) {
		framed := binary.BigEndian.AppendUint16(nil, uint16(len(q)))
		f.Add(q, append(framed, q...))
		f.Add(q, append(framed, q[:len(q)/2]...))
	})
	f.Add([]byte{}, []byte{0xff, 0xff})
	var (
		once     sync.Once
		udp, tcp string
	)
	f.Fuzz(func(t *testing.T, dgram, stream []byte) {
		once.Do(func() {
			r := NewResolver(dualTable(), Config{TCPReadTimeout: 200 * time.Millisecond})
			// the event loop, as a sandbox's 127.0.0.11 is served; kept for
			// the whole fuzz process
			udp, _ = serveLoopFDs(t, r, newClient(idWeb, forwardAll))
			tcp = udp
		})
		uc, err := net.Dial("udp", udp)
		if err != nil {
			t.Fatal(err)
		}
		defer uc.Close()
		if len(dgram) > 0 {
			_, _ = uc.Write(dgram)
		}
		tc, err := net.Dial("tcp", tcp)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = tc.Write(stream)
		tc.Close()
		for _, p := range []struct{ net, addr string }{{"udp", udp}, {"tcp", tcp}} {
			c := &mdns.Client{Net: p.net, Timeout: 5 * time.Second}
			resp, _, err := c.Exchange(new(mdns.Msg).SetQuestion("db.", mdns.TypeA), p.addr)
			if err != nil || len(aRecords(resp)) != 1 {
				t.Fatalf("%s: resolver does not answer after %q / %q: %v %v", p.net, dgram, stream, resp, err)
			}
		}
	})
}
