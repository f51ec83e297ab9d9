package link

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/driver"
)

const testID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func testLink() *driver.P2PLink {
	return &driver.P2PLink{ID: testID, NSA: "/run/tether/ns/a", NSB: "/run/tether/ns/b", IfA: "p2p0", IfB: "p2p1",
		AddrA: netip.MustParsePrefix("10.1.1.0/32"), AddrB: netip.MustParsePrefix("10.1.1.1/32")}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(l *driver.P2PLink)
		want string // "" = valid
	}{
		{"valid", func(l *driver.P2PLink) {}, ""},
		{"mtu", func(l *driver.P2PLink) { l.MTU = 9000 }, ""},
		{"no id", func(l *driver.P2PLink) { l.ID = "" }, "no ID"},
		{"no namespace", func(l *driver.P2PLink) { l.NSB = "" }, "namespace path is empty"},
		{"same namespace", func(l *driver.P2PLink) { l.NSB = l.NSA }, "both ends in namespace"},
		{"empty name", func(l *driver.P2PLink) { l.IfA = "" }, "empty interface name"},
		{"long name", func(l *driver.P2PLink) { l.IfB = "p2p-0123456789ab" }, "longer than 15"},
		{"slash", func(l *driver.P2PLink) { l.IfA = "p2p/0" }, "slash"},
		{"space", func(l *driver.P2PLink) { l.IfB = "p2p 0" }, "space"},
		{"dot", func(l *driver.P2PLink) { l.IfB = "." }, `interface name "."`},
		{"no address", func(l *driver.P2PLink) { l.AddrA = netip.Prefix{} }, "not an IPv4"},
		{"IPv6 address", func(l *driver.P2PLink) { l.AddrB = netip.MustParsePrefix("fd00::1/128") }, "not an IPv4"},
		{"same address", func(l *driver.P2PLink) { l.AddrB = l.AddrA }, "both ends have address"},
		{"small MTU", func(l *driver.P2PLink) { l.MTU = 67 }, "MTU 67"},
		{"big MTU", func(l *driver.P2PLink) { l.MTU = 65536 }, "MTU 65536"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := testLink()
			tc.edit(l)
			err := Validate(l)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want ErrInvalid with %q", err, tc.want)
			}
		})
	}
	if err := Validate(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Validate(nil) = %v", err)
	}
}

// intactEnds are the two ends of testLink as the kernel shows an intact
// pair: A's namespace calls B's 3, B's calls A's 0.
func intactEnds() (End, End) {
	marker := driver.LinkMarker(testID)
	a := End{Name: "p2p0", Exists: true, Veth: true, Alias: marker, Index: 2, Up: true, MTU: 1500,
		PeerIndex: 7, PeerNSID: 3, OtherNSID: 3,
		Addrs:  []netip.Prefix{netip.MustParsePrefix("10.1.1.0/32")},
		Routes: []netip.Prefix{netip.MustParsePrefix("10.1.1.1/32")}}
	b := End{Name: "p2p1", Exists: true, Veth: true, Alias: marker, Index: 7, Up: true, MTU: 1500,
		PeerIndex: 2, PeerNSID: 0, OtherNSID: 0,
		Addrs:  []netip.Prefix{netip.MustParsePrefix("10.1.1.1/32")},
		Routes: []netip.Prefix{netip.MustParsePrefix("10.1.1.0/32"), netip.MustParsePrefix("10.9.0.0/16")}}
	return a, b
}

func TestProblem(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(l *driver.P2PLink, a, b *End)
		want   string // "" = intact
		paired bool
	}{
		{"intact", func(l *driver.P2PLink, a, b *End) {}, "", true},
		{"mtu 0 is 1500", func(l *driver.P2PLink, a, b *End) { l.MTU = 0 }, "", true},
		{"end missing", func(l *driver.P2PLink, a, b *End) { *b = End{Name: "p2p1"} }, `"p2p1" is missing`, false},
		{"not a veth", func(l *driver.P2PLink, a, b *End) { a.Veth = false }, "not this link's pair", false},
		{"other link's marker", func(l *driver.P2PLink, a, b *End) { b.Alias = driver.LinkMarker(strings.Repeat("f", 64)) }, "not this link's pair", false},
		{"no marker", func(l *driver.P2PLink, a, b *End) { a.Alias = "" }, "not this link's pair", false},
		{"peer index elsewhere", func(l *driver.P2PLink, a, b *End) { a.PeerIndex = 8 }, "not this link's pair", false},
		{"peer in another namespace", func(l *driver.P2PLink, a, b *End) { a.PeerNSID = 4 }, "not this link's pair", false},
		{"peer in the same namespace", func(l *driver.P2PLink, a, b *End) { b.PeerNSID = -1 }, "not this link's pair", false},
		{"other namespace has no ID", func(l *driver.P2PLink, a, b *End) { a.OtherNSID, a.PeerNSID = -1, -1 }, "not this link's pair", false},
		{"down", func(l *driver.P2PLink, a, b *End) { b.Up = false }, `"p2p1" is down`, true},
		{"mtu", func(l *driver.P2PLink, a, b *End) { l.MTU = 9000 }, "has MTU 1500, not 9000", true},
		{"address lost", func(l *driver.P2PLink, a, b *End) { a.Addrs = nil }, `"p2p0" lacks address 10.1.1.0/32`, true},
		{"address with another length", func(l *driver.P2PLink, a, b *End) { b.Addrs[0] = netip.MustParsePrefix("10.1.1.1/24") }, "lacks address", true},
		{"route lost", func(l *driver.P2PLink, a, b *End) { b.Routes = b.Routes[1:] }, `"p2p1" lacks the route to 10.1.1.0`, true},
		{"record's addresses changed", func(l *driver.P2PLink, a, b *End) { l.AddrB = netip.MustParsePrefix("10.1.1.3/32") }, "lacks", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := testLink()
			a, b := intactEnds()
			tc.edit(l, &a, &b)
			if got := Problem(l, a, b); (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("Problem = %q, want %q", got, tc.want)
			}
			if got := paired(l, a, b); got != tc.paired {
				t.Errorf("paired = %v, want %v", got, tc.paired)
			}
		})
	}
}
