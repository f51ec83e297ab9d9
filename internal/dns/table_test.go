package dns

import (
	"net/netip"
	"slices"
	"testing"
)

const (
	idWeb = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	idDB  = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	idB   = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// testTable: web and db on net-a; other on net-b; db also on net-b.
func testTable() *Table {
	t := NewTable()
	t.Set(idWeb, []Entry{{SandboxID: idWeb, Name: "web", NetworkID: "na", NetworkName: "net-a",
		Aliases: []string{"front", "svc"}, Addr: ip("172.18.0.2")}})
	t.Set(idDB, []Entry{
		{SandboxID: idDB, Name: "db", NetworkID: "na", NetworkName: "net-a", Aliases: []string{"svc"}, Addr: ip("172.18.0.3")},
		{SandboxID: idDB, Name: "db", NetworkID: "nb", NetworkName: "net-b", Addr: ip("172.19.0.3")},
	})
	t.Set(idB, []Entry{{SandboxID: idB, Name: "other", NetworkID: "nb", NetworkName: "net-b", Addr: ip("172.19.0.2")}})
	return t
}

func TestLookup(t *testing.T) {
	tb := testTable()
	for _, tc := range []struct {
		src, name string
		want      []string
		known     bool
	}{
		{idWeb, "db", []string{"172.18.0.3"}, true},
		{idWeb, "db.net-a", []string{"172.18.0.3"}, true},
		{idWeb, "DB.Net-A.", []string{"172.18.0.3"}, true},
		{idWeb, "web", []string{"172.18.0.2"}, true},
		{idWeb, "front.net-a", []string{"172.18.0.2"}, true},
		{idWeb, "svc", []string{"172.18.0.2", "172.18.0.3"}, true},
		{idWeb, "svc.net-a", []string{"172.18.0.2", "172.18.0.3"}, true},
		{idWeb, idDB[:12], []string{"172.18.0.3"}, true},
		{idWeb, "FEDCBA987654", []string{"172.18.0.3"}, true},
		{idWeb, idDB[:13], nil, false},
		// scoping: other is only on net-b, web only on net-a
		{idWeb, "other", nil, false},
		{idWeb, "other.net-b", nil, false},
		{idWeb, "db.net-b", nil, false},
		{idB, "web", nil, false},
		{idB, "svc", nil, false},
		{idB, "db", []string{"172.19.0.3"}, true},
		// db is on both networks: sees both of itself, each network's view
		{idDB, "db", []string{"172.18.0.3", "172.19.0.3"}, true},
		{idDB, "other", []string{"172.19.0.2"}, true},
		{"unknown-sandbox", "web", nil, false},
		{idWeb, "example.com", nil, false},
	} {
		got, known := tb.Lookup(tc.src, tc.name)
		var gs []string
		for _, a := range got {
			gs = append(gs, a.String())
		}
		slices.Sort(gs)
		if known != tc.known || !slices.Equal(gs, tc.want) {
			t.Errorf("Lookup(%.6s, %q) = %v, %v; want %v, %v", tc.src, tc.name, gs, known, tc.want, tc.known)
		}
	}
}

func TestLookupShuffles(t *testing.T) {
	tb := NewTable()
	for i := range 5 {
		id := string(rune('a'+i)) + idWeb[1:]
		tb.Set(id, []Entry{{Name: "n" + id[:1], NetworkID: "na", NetworkName: "net-a", Aliases: []string{"pool"},
			Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})}})
	}
	firsts := map[netip.Addr]bool{}
	for range 500 {
		got, known := tb.Lookup(idWeb[:0]+"a"+idWeb[1:], "pool")
		if !known || len(got) != 5 {
			t.Fatalf("Lookup(pool) = %v, %v; want 5 addresses", got, known)
		}
		firsts[got[0]] = true
	}
	if len(firsts) != 5 {
		t.Errorf("first address over 500 lookups took %d distinct values, want 5 (no shuffling?)", len(firsts))
	}
}

func TestSetRemove(t *testing.T) {
	tb := testTable()
	// web disconnects from net-a and connects to net-b under a new alias
	tb.Set(idWeb, []Entry{{Name: "web", NetworkID: "nb", NetworkName: "net-b", Aliases: []string{"w2"}, Addr: ip("172.19.0.9")}})
	if _, known := tb.Lookup(idDB, "front"); known {
		t.Error("old alias front still known after Set")
	}
	if got, _ := tb.Lookup(idDB, "svc"); len(got) != 1 || got[0] != ip("172.18.0.3") {
		t.Errorf("svc after web left net-a = %v, want only db", got)
	}
	if got, known := tb.Lookup(idB, "w2.net-b"); !known || len(got) != 1 || got[0] != ip("172.19.0.9") {
		t.Errorf("w2.net-b = %v, %v", got, known)
	}
	if _, known := tb.Lookup(idB, "web"); !known {
		t.Error("web not visible from net-b after connect")
	}
	tb.Remove(idWeb)
	tb.Remove(idWeb) // idempotent
	for _, n := range []string{"web", "w2", idWeb[:12]} {
		if _, known := tb.Lookup(idB, n); known {
			t.Errorf("%q known after Remove", n)
		}
	}
	if _, known := tb.Lookup(idWeb, "db"); known {
		t.Error("removed sandbox still resolves names")
	}
	tb.Set(idDB, nil)
	tb.Remove(idB)
	if len(tb.nets) != 0 || len(tb.sandboxes) != 0 {
		t.Errorf("table not empty after removing everything: %d nets, %d sandboxes", len(tb.nets), len(tb.sandboxes))
	}
}

func TestReverse(t *testing.T) {
	tb := testTable()
	for _, tc := range []struct {
		src  string
		addr string
		want string
		ok   bool
	}{
		{idWeb, "172.18.0.3", "db.net-a", true},
		{idWeb, "172.18.0.2", "web.net-a", true},
		{idWeb, "172.19.0.2", "", false}, // other is on net-b only
		{idB, "172.19.0.3", "db.net-b", true},
		{idB, "172.18.0.3", "", false},
		{idWeb, "8.8.8.8", "", false},
	} {
		got, ok := tb.Reverse(tc.src, ip(tc.addr))
		if got != tc.want || ok != tc.ok {
			t.Errorf("Reverse(%.6s, %s) = %q, %v; want %q, %v", tc.src, tc.addr, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseReverse(t *testing.T) {
	if a, ok := parseReverse("3.0.18.172.IN-ADDR.ARPA."); !ok || a != ip("172.18.0.3") {
		t.Errorf("parseReverse = %v, %v", a, ok)
	}
	for _, bad := range []string{"0.18.172.in-addr.arpa.", "300.0.18.172.in-addr.arpa.", "x.ip6.arpa.", "example.com."} {
		if _, ok := parseReverse(bad); ok {
			t.Errorf("parseReverse(%q) succeeded", bad)
		}
	}
}
