package cluster

import (
	"net/netip"
	"testing"
)

// The sticky addresses are kept by name and counted by address; the count
// is what an attach with no sticky address of its own avoids.
func TestStickyCounts(t *testing.T) {
	x, y := netip.MustParseAddr("10.1.0.2"), netip.MustParseAddr("10.1.0.3")
	type op struct {
		del     bool
		name    string
		addr    netip.Addr
		wantAtX int
		wantAtY int
	}
	for _, tc := range []struct {
		name string
		ops  []op
	}{
		{"one name", []op{{name: "a", addr: x, wantAtX: 1}}},
		{"same again", []op{{name: "a", addr: x, wantAtX: 1}, {name: "a", addr: x, wantAtX: 1}}},
		{"moved", []op{{name: "a", addr: x, wantAtX: 1}, {name: "a", addr: y, wantAtY: 1}}},
		{"two names, one address", []op{{name: "a", addr: x, wantAtX: 1}, {name: "b", addr: x, wantAtX: 2}, {del: true, name: "a", wantAtX: 1}}},
		{"deleted", []op{{name: "a", addr: x, wantAtX: 1}, {del: true, name: "a"}}},
		{"unknown deleted", []op{{del: true, name: "zz"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &Allocator{sticky: map[string]*stickyNet{}}
			for i, o := range tc.ops {
				if o.del {
					a.dropSticky("net", o.name)
				} else {
					a.setSticky("net", o.name, o.addr)
				}
				sn := a.sticky["net"]
				atX, atY := 0, 0
				if sn != nil {
					atX, atY = sn.at[x], sn.at[y]
				}
				if atX != o.wantAtX || atY != o.wantAtY {
					t.Fatalf("after op %d: %d names hold %v, %d hold %v; want %d, %d", i, atX, x, atY, y, o.wantAtX, o.wantAtY)
				}
				if !o.del && a.stickyOf("net", o.name) != o.addr {
					t.Fatalf("after op %d: sticky of %q is %v, want %v", i, o.name, a.stickyOf("net", o.name), o.addr)
				}
			}
		})
	}
}
