package dns

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"sort"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// libraryAnswer is what the library path (decode, serve) sends for b, as
// the client decodes it; nil for no answer.
func libraryAnswer(t testing.TB, r *Resolver, c *client, b []byte) *mdns.Msg {
	t.Helper()
	req, resp := decode(b)
	if req != nil {
		w := &capture{}
		r.serve(c, w, req)
		if len(w.msgs) == 0 {
			return nil
		}
		resp = w.msgs[0]
	}
	if resp == nil {
		return nil
	}
	return repack(t, resp)
}

func repack(t testing.TB, m *mdns.Msg) *mdns.Msg {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("pack %v: %v", m, err)
	}
	return unpackSorted(t, b)
}

// unpackSorted decodes b with its answers in a fixed order (both paths
// shuffle them).
func unpackSorted(t testing.TB, b []byte) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatalf("unpack %x: %v", b, err)
	}
	sort.Slice(m.Answer, func(i, j int) bool { return m.Answer[i].String() < m.Answer[j].String() })
	return m
}

func packQuery(t testing.TB, name string, qtype uint16, edns uint16, edit func(*mdns.Msg)) []byte {
	m := new(mdns.Msg).SetQuestion(name, qtype)
	m.Id = 0xbeef
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	if edit != nil {
		edit(m)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWireMatchesLibrary: every query the wire path answers gets the same
// answer the library path gives; the others are left to the library.
func TestWireMatchesLibrary(t *testing.T) {
	r := NewResolver(dualTable(), Config{Upstreams: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:53")}})
	web := newClient(idWeb, forwardAll)
	noRD := func(m *mdns.Msg) { m.RecursionDesired = false }
	cd := func(m *mdns.Msg) { m.CheckingDisabled = true }
	for _, tc := range []struct {
		name string
		b    []byte
		c    *client
		wire bool // answered from the wire
	}{
		{"A of a local name", packQuery(t, "db.", mdns.TypeA, 0, nil), web, true},
		{"A, mixed case, qualified", packQuery(t, "Db.NET-a.", mdns.TypeA, 0, nil), web, true},
		{"A of a shared alias (two answers)", packQuery(t, "svc.", mdns.TypeA, 0, nil), web, true},
		{"AAAA of a dual-stack name", packQuery(t, "dual.", mdns.TypeAAAA, 0, nil), web, true},
		{"A of an IPv6-only name: NODATA", packQuery(t, "six.", mdns.TypeA, 0, nil), web, true},
		{"AAAA of an IPv4-only name: NODATA", packQuery(t, "db.", mdns.TypeAAAA, 0, nil), web, true},
		{"MX of a local name: NODATA", packQuery(t, "db.", mdns.TypeMX, 0, nil), web, true},
		{"short ID", packQuery(t, idD[:12]+".", mdns.TypeAAAA, 0, nil), web, true},
		{"EDNS0 4096", packQuery(t, "web.", mdns.TypeA, 4096, nil), web, true},
		{"EDNS0 above 4096 clamped", packQuery(t, "pair.", mdns.TypeAAAA, 65000, nil), web, true},
		{"EDNS0 below 512", packQuery(t, "db.", mdns.TypeA, 100, nil), web, true},
		{"RD clear, CD set", packQuery(t, "db.", mdns.TypeA, 0, func(m *mdns.Msg) { noRD(m); cd(m) }), web, true},
		{"PTR: library", packQuery(t, "3.0.18.172.in-addr.arpa.", mdns.TypePTR, 0, nil), web, false},
		{"unknown name: forwarded by the library", packQuery(t, "www.example.", mdns.TypeA, 0, nil), newClient(idWeb, Policy{}), false},
		{"name on another network: library", packQuery(t, "other.", mdns.TypeA, 0, nil), newClient(idWeb, Policy{}), false},
		{"class CH: library", packQuery(t, "db.", mdns.TypeA, 0, func(m *mdns.Msg) { m.Question[0].Qclass = mdns.ClassCHAOS }), newClient(idWeb, Policy{}), false},
		{"escaped label: library", packQuery(t, `d\.b.`, mdns.TypeA, 0, nil), newClient(idWeb, Policy{}), false},
		{"EDNS0 option: library", packQuery(t, "db.", mdns.TypeA, 1232, func(m *mdns.Msg) {
			m.IsEdns0().Option = append(m.IsEdns0().Option, &mdns.EDNS0_COOKIE{Code: mdns.EDNS0COOKIE, Cookie: "0102030405060708"})
		}), web, false},
		{"a response: library ignores it", packQuery(t, "db.", mdns.TypeA, 0, func(m *mdns.Msg) { m.Response = true }), web, false},
		{"opcode UPDATE: library NOTIMP", packQuery(t, "db.", mdns.TypeA, 0, func(m *mdns.Msg) { m.Opcode = mdns.OpcodeUpdate }), web, false},
		{"trailing bytes: library", append(packQuery(t, "db.", mdns.TypeA, 0, nil), 0), web, false},
		{"host client (ServeUpstream): library", packQuery(t, "db.", mdns.TypeA, 0, nil), &client{id: "up", host: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s wireScratch
			out, ok := r.localWire(tc.c, tc.b, &s, nil)
			if ok != tc.wire {
				t.Fatalf("answered from the wire: %v, want %v", ok, tc.wire)
			}
			if !ok {
				return
			}
			got, want := unpackSorted(t, out), libraryAnswer(t, r, tc.c, tc.b)
			if got.String() != want.String() {
				t.Errorf("wire answer:\n%v\nlibrary answer:\n%v", got, want)
			}
		})
	}
}

// TestWireTooBigLeftToLibrary: an answer over the client's size is left
// to the library path, which truncates it.
func TestWireTooBigLeftToLibrary(t *testing.T) {
	tb := NewTable()
	for i := range 40 {
		id := string(rune('a'+i%26)) + string(rune('a'+i/26))
		tb.Set(id, []Entry{{Name: "n" + id, NetworkID: "n", NetworkName: "net", Aliases: []string{"big"},
			Addr: netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)})}})
	}
	r := NewResolver(tb, Config{})
	var s wireScratch
	if _, ok := r.localWire(newClient("aa", forwardAll), packQuery(t, "big.", mdns.TypeA, 0, nil), &s, nil); ok {
		t.Error("40 A records (over 512 bytes) answered from the wire")
	}
	out, ok := r.localWire(newClient("aa", forwardAll), packQuery(t, "big.", mdns.TypeA, 1232, nil), &s, nil)
	if !ok || len(unpackSorted(t, out).Answer) != 40 {
		t.Errorf("with EDNS0 1232: wire %v", ok)
	}
}

// TestWireAllocatesNothing: a local answer from the wire allocates nothing.
func TestWireAllocatesNothing(t *testing.T) {
	r := NewResolver(testTable(), Config{})
	c := newClient(idWeb, forwardAll)
	b := packQuery(t, "svc.", mdns.TypeA, 0, nil)
	var s wireScratch
	s.addrs = make([]netip.Addr, 0, 8)
	out := make([]byte, 0, udpBufSize)
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := r.localWire(c, b, &s, out); !ok {
			t.Fatal("not answered from the wire")
		}
	}); n != 0 {
		t.Errorf("%v allocations per answer", n)
	}
}

// FuzzWire: any bytes the wire path answers get the library's answer.
func FuzzWire(f *testing.F) {
	addQuerySeeds(f, func(q []byte) { f.Add(q) })
	r := NewResolver(dualTable(), Config{})
	c := newClient(idWeb, Policy{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var s wireScratch
		out, ok := r.localWire(c, b, &s, nil)
		if !ok {
			return
		}
		want := libraryAnswer(t, r, c, b)
		if want == nil {
			t.Fatalf("wire answered %x, the library would not", b)
		}
		if got := unpackSorted(t, out); got.String() != want.String() {
			t.Fatalf("wire answer:\n%v\nlibrary answer:\n%v", got, want)
		}
	})
}

func TestDecodeLikeTheLibrary(t *testing.T) {
	q := packQuery(t, "db.", mdns.TypeA, 0, nil)
	two := packQuery(t, "db.", mdns.TypeA, 0, func(m *mdns.Msg) { m.Question = append(m.Question, m.Question[0]) })
	for _, tc := range []struct {
		name      string
		b         []byte
		req       bool
		rcode     int // of the rejection; -1 none
		opcode    int
		questions int
	}{
		{"query", q, true, -1, 0, 0},
		{"short", q[:5], false, -1, 0, 0},
		{"response ignored", func() []byte { b := slices.Clone(q); b[2] |= 0x80; return b }(), false, -1, 0, 0},
		{"two questions: FORMERR", two, false, mdns.RcodeFormatError, mdns.OpcodeQuery, 0},
		{"name cut: FORMERR", q[:14], false, mdns.RcodeFormatError, mdns.OpcodeQuery, 0},
		{"opcode 5: NOTIMP", func() []byte { b := slices.Clone(q); b[2] = b[2]&^0x78 | 5<<3; return b }(), false, mdns.RcodeNotImplemented, 5, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, rej := decode(tc.b)
			if (req != nil) != tc.req {
				t.Fatalf("request decoded: %v, want %v", req != nil, tc.req)
			}
			if tc.rcode < 0 {
				if rej != nil {
					t.Errorf("rejection %v, want none", rej)
				}
				return
			}
			if rej == nil || rej.Rcode != tc.rcode || rej.Opcode != tc.opcode || !rej.Response || rej.Id != binary.BigEndian.Uint16(tc.b) {
				t.Errorf("rejection %v, want rcode %d opcode %d", rej, tc.rcode, tc.opcode)
			}
		})
	}
}

// TestAcceptConns: the loop's accept within the connection limits, and
// its backoff after a shortage (the listener paused, never spun).
func TestAcceptConns(t *testing.T) {
	tests := []struct {
		name                   string
		results                []any // fd (int) or error
		maxSandbox, maxAll     int
		heldAll                int64
		backoff                time.Duration
		wantServed, wantReset  []int
		wantPause, wantBackoff time.Duration
	}{
		{name: "under the limits, then empty", results: []any{10, 11, unix.EAGAIN}, maxSandbox: 5, maxAll: 5, wantServed: []int{10, 11}},
		{name: "per-sandbox limit resets the rest", results: []any{10, 11, 12, unix.EAGAIN}, maxSandbox: 1, maxAll: 5,
			wantServed: []int{10}, wantReset: []int{11, 12}},
		{name: "global limit", results: []any{10, 11, unix.EAGAIN}, maxSandbox: 5, maxAll: 3, heldAll: 2,
			wantServed: []int{10}, wantReset: []int{11}},
		{name: "aborted connection skipped", results: []any{unix.ECONNABORTED, 10, unix.EAGAIN}, maxSandbox: 5, maxAll: 5, wantServed: []int{10}},
		{name: "first shortage pauses 5 ms", results: []any{unix.EMFILE}, maxSandbox: 5, maxAll: 5,
			wantPause: 5 * time.Millisecond, wantBackoff: 5 * time.Millisecond},
		{name: "shortage again doubles", results: []any{unix.ENFILE}, maxSandbox: 5, maxAll: 5, backoff: 80 * time.Millisecond,
			wantPause: 160 * time.Millisecond, wantBackoff: 160 * time.Millisecond},
		{name: "capped at 250 ms", results: []any{unix.ENOBUFS}, maxSandbox: 5, maxAll: 5, backoff: 160 * time.Millisecond,
			wantPause: 250 * time.Millisecond, wantBackoff: 250 * time.Millisecond},
		{name: "unknown error pauses too", results: []any{errors.New("odd")}, maxSandbox: 5, maxAll: 5,
			wantPause: 5 * time.Millisecond, wantBackoff: 5 * time.Millisecond},
		{name: "success resets the backoff", results: []any{10, unix.EAGAIN}, maxSandbox: 5, maxAll: 5, backoff: 250 * time.Millisecond,
			wantServed: []int{10}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewResolver(NewTable(), Config{MaxTCPConnsPerSandbox: tc.maxSandbox, MaxTCPConns: tc.maxAll})
			r.tcpConns.Store(tc.heldAll)
			c := newClient("s", forwardAll)
			results := tc.results
			accept := func() (int, error) {
				if len(results) == 0 {
					t.Fatal("accept called after EAGAIN or a pause")
				}
				res := results[0]
				results = results[1:]
				if err, ok := res.(error); ok {
					return -1, err
				}
				return res.(int), nil
			}
			var served, reset []int
			var releases []func()
			backoff := tc.backoff
			pause := r.acceptConns(c, &backoff, accept, func(fd int) { reset = append(reset, fd) },
				func(fd int, release func()) { served = append(served, fd); releases = append(releases, release) })
			if pause != tc.wantPause || backoff != tc.wantBackoff {
				t.Errorf("pause %v backoff %v, want %v %v", pause, backoff, tc.wantPause, tc.wantBackoff)
			}
			if !slices.Equal(served, tc.wantServed) || !slices.Equal(reset, tc.wantReset) {
				t.Errorf("served %v reset %v, want %v %v", served, reset, tc.wantServed, tc.wantReset)
			}
			if c.tcpConns.Load() != int64(len(served)) || r.tcpConns.Load() != tc.heldAll+int64(len(served)) {
				t.Errorf("held %d/%d after serving %d", c.tcpConns.Load(), r.tcpConns.Load(), len(served))
			}
			for _, rel := range releases {
				rel()
			}
			if c.tcpConns.Load() != 0 || r.tcpConns.Load() != tc.heldAll {
				t.Errorf("after release: held %d/%d", c.tcpConns.Load(), r.tcpConns.Load())
			}
		})
	}
}
