package dns

import (
	"net/netip"
	"slices"
	"testing"
)

const (
	idC = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0"
	idD = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0"
)

// hostTable is testTable plus, on net-c, a sandbox named "x.net-b" and
// one named like a short ID.
func hostTable() *Table {
	tb := testTable()
	tb.Set(idC, []Entry{{Name: "x.net-b", NetworkID: "nc", NetworkName: "net-c", Addr: ip("172.20.0.2")}})
	tb.Set(idD, []Entry{{Name: "deadbeefcafe", NetworkID: "nc", NetworkName: "net-c", Aliases: []string{"solo"},
		Addr: ip("172.20.0.3")}})
	return tb
}

func sorted(addrs []netip.Addr) []string {
	var s []string
	for _, a := range addrs {
		s = append(s, a.String())
	}
	slices.Sort(s)
	return s
}

func TestLookupHost(t *testing.T) {
	tb := hostTable()
	for _, tc := range []struct {
		name  string
		want  []string
		known bool
	}{
		// qualified names always answer
		{"db.net-a", []string{"172.18.0.3"}, true},
		{"DB.Net-B.", []string{"172.19.0.3"}, true},
		{"front.net-a", []string{"172.18.0.2"}, true},
		{"svc.net-a", []string{"172.18.0.2", "172.18.0.3"}, true},
		{"other.net-b", []string{"172.19.0.2"}, true},
		{"other.net-a", nil, false},
		// bare names: only when one network has them
		{"web", []string{"172.18.0.2"}, true},
		{"web.", []string{"172.18.0.2"}, true},
		{"svc", []string{"172.18.0.2", "172.18.0.3"}, true}, // two holders, one network
		{"other", []string{"172.19.0.2"}, true},
		{"solo", []string{"172.20.0.3"}, true},
		{"db", nil, false}, // on net-a and net-b: ambiguous, forwarded
		{"DB.", nil, false},
		// short IDs never, whether on one network or several
		{idB[:12], nil, false},
		{idDB[:12], nil, false},
		{"deadbeefcafe", nil, false}, // a name that looks like a short ID
		{"deadbeefcafe.net-c", []string{"172.20.0.3"}, true},
		// a bare name with a dot, on one network; the qualified reading
		// would win (TestLookupHostQualifiedWins) but net-b has no x
		{"x.net-b", []string{"172.20.0.2"}, true},
		{"x.net-c", nil, false},
		{"x.net-b.net-c", []string{"172.20.0.2"}, true},
		{"example.com", nil, false},
		{"", nil, false},
	} {
		got, known := tb.LookupHost(tc.name)
		if known != tc.known || !slices.Equal(sorted(got), tc.want) {
			t.Errorf("LookupHost(%q) = %v, %v; want %v, %v", tc.name, sorted(got), known, tc.want, tc.known)
		}
	}
}

// TestLookupHostQualifiedWins: "x.net-b" names sandbox x on net-b, not the
// sandbox named "x.net-b" on net-c.
func TestLookupHostQualifiedWins(t *testing.T) {
	tb := hostTable()
	if got, _ := tb.LookupHost("x.net-b"); !slices.Equal(sorted(got), []string{"172.20.0.2"}) {
		t.Fatalf("x.net-b before any x on net-b = %v, want net-c's sandbox", sorted(got))
	}
	tb.Set(idB, []Entry{{Name: "other", NetworkID: "nb", NetworkName: "net-b", Aliases: []string{"x"}, Addr: ip("172.19.0.2")}})
	if got, known := tb.LookupHost("x.net-b"); !known || !slices.Equal(sorted(got), []string{"172.19.0.2"}) {
		t.Errorf("x.net-b = %v, %v; want only net-b's x", sorted(got), known)
	}
}

// TestLookupHostFollowsTable: ambiguity comes and goes with the entries.
func TestLookupHostFollowsTable(t *testing.T) {
	tb := hostTable()
	tb.Set(idDB, []Entry{{Name: "db", NetworkID: "na", NetworkName: "net-a", Aliases: []string{"svc"}, Addr: ip("172.18.0.3")}})
	if got, known := tb.LookupHost("db"); !known || !slices.Equal(sorted(got), []string{"172.18.0.3"}) {
		t.Errorf("db after leaving net-b = %v, %v; want net-a's only", sorted(got), known)
	}
	tb.Set(idB, []Entry{{Name: "web", NetworkID: "nb", NetworkName: "net-b", Addr: ip("172.19.0.2")}})
	if _, known := tb.LookupHost("web"); known {
		t.Error("web on net-a and net-b answered host-wide")
	}
	tb.Remove(idWeb)
	if got, known := tb.LookupHost("web"); !known || !slices.Equal(sorted(got), []string{"172.19.0.2"}) {
		t.Errorf("web after net-a's left = %v, %v", sorted(got), known)
	}
	tb.Remove(idB)
	if _, known := tb.LookupHost("web.net-b"); known {
		t.Error("web.net-b known after Remove")
	}
}

func TestReverseHost(t *testing.T) {
	tb := hostTable()
	// the same address on two networks (overlapping subnets)
	tb.Set(idWeb, []Entry{
		{Name: "web", NetworkID: "ny", NetworkName: "net-y", Addr: ip("10.9.0.2")},
		{Name: "web", NetworkID: "nx", NetworkName: "net-x", Addr: ip("10.9.0.2")},
	})
	for _, tc := range []struct {
		addr, want string
		ok         bool
	}{
		{"172.18.0.3", "db.net-a", true},
		{"172.19.0.3", "db.net-b", true},
		{"172.19.0.2", "other.net-b", true},
		{"172.20.0.3", "deadbeefcafe.net-c", true},
		{"10.9.0.2", "web.net-x", true},
		{"172.18.0.2", "", false}, // web left net-a
		{"8.8.8.8", "", false},
	} {
		for range 20 { // the answer does not depend on map order
			got, ok := tb.ReverseHost(ip(tc.addr))
			if got != tc.want || ok != tc.ok {
				t.Fatalf("ReverseHost(%s) = %q, %v; want %q, %v", tc.addr, got, ok, tc.want, tc.ok)
			}
		}
	}
}
