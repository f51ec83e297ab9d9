package engine

// The address policy of the attach pipeline (ipam/policy.go): the static
// address when asked for, else the sandbox name's sticky address when it
// is free, else the allocator's order: next-fit on a local network's
// bitmap, lowest free (others' sticky addresses last) on a global one.

import (
	"fmt"
	"net/netip"
	"testing"
)

func TestStaticAddress(t *testing.T) {
	for _, global := range []bool{false, true} {
		t.Run(scopeName(global), func(t *testing.T) {
			r := policyRig(t, global)
			sub := r.ns("n1").rec.Subnet
			host := func(i int) string { return addrAt(sub, i) }
			if got := attachIP(t, r, "web", AttachSpec{Network: "n1", IP: host(7)}); got != host(7) {
				t.Fatalf("static %s: got %s", host(7), got)
			}
			if ep := endpointOn(r.getSandbox("web"), r.ns("n1").rec.ID); !ep.StaticIP {
				t.Error("endpoint not marked static")
			}
			for _, tc := range []struct {
				name string
				ip   string
				kind Kind
			}{
				{"taken", host(7), KindConflict},
				{"outside the subnet", "192.0.2.7", KindInvalid},
				{"network address", host(0), KindInvalid},
				{"not IPv4", "fd00::7", KindInvalid},
				{"not an address", "ten", KindInvalid},
			} {
				_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "other", Networks: []AttachSpec{{Network: "n1", IP: tc.ip}}})
				wantKind(t, err, tc.kind, "static address "+tc.name)
				if _, err := r.e.Sandbox("other"); err == nil {
					t.Errorf("%s: the sandbox of a refused attach was kept", tc.name)
				}
			}
			// The gateway is refused; as what differs between the local
			// bitmap (in use: 409) and the store allocator (not a host
			// address to hand out: 400).
			_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "other", Networks: []AttachSpec{{Network: "n1", IP: host(1)}}})
			if k := KindOf(err); k != KindConflict && k != KindInvalid {
				t.Errorf("static address of the gateway: %v (kind %d), want refused as a conflict or invalid", err, k)
			}
			if p := r.pending("n1"); p != 0 {
				t.Errorf("%d attaches pending after the refusals", p)
			}
		})
	}
}

// A sandbox removed and created again under the same name gets its address
// back, though other sandboxes came and took addresses meanwhile.
func TestStickyAddress(t *testing.T) {
	for _, global := range []bool{false, true} {
		t.Run(scopeName(global), func(t *testing.T) {
			r := policyRig(t, global)
			sub := r.ns("n1").rec.Subnet
			first := attachIP(t, r, "web", AttachSpec{Network: "n1"})
			if first != addrAt(sub, 2) {
				t.Fatalf("first address %s, want %s", first, addrAt(sub, 2))
			}
			attachIP(t, r, "store", AttachSpec{Network: "n1"})
			if err := r.e.RemoveSandbox(r.ctx, "web", false); err != nil {
				t.Fatal(err)
			}
			if !global {
				r.awaitFree("n1", first) // freed once its link is gone
			}
			attachIP(t, r, "cache", AttachSpec{Network: "n1"})
			if got := attachIP(t, r, "web", AttachSpec{Network: "n1"}); got != first {
				t.Fatalf("web came back with %s, want its sticky %s", got, first)
			}
			// Reconnecting keeps it too.
			if err := r.e.Disconnect(r.ctx, "n1", "web", false); err != nil {
				t.Fatal(err)
			}
			if err := r.e.Connect(r.ctx, "n1", "web", AttachSpec{}); err != nil {
				t.Fatal(err)
			}
			if got := endpointOn(r.getSandbox("web"), r.ns("n1").rec.ID).Address.Addr().String(); got != first {
				t.Fatalf("reconnected with %s, want %s", got, first)
			}
		})
	}
}

// A sticky address another sandbox took meanwhile is not taken from it:
// the returning sandbox gets another one.
func TestStickyAddressTaken(t *testing.T) {
	for _, global := range []bool{false, true} {
		t.Run(scopeName(global), func(t *testing.T) {
			r := policyRig(t, global)
			sub := r.ns("n1").rec.Subnet
			first := attachIP(t, r, "web", AttachSpec{Network: "n1"})
			if err := r.e.RemoveSandbox(r.ctx, "web", false); err != nil {
				t.Fatal(err)
			}
			if !global {
				r.awaitFree("n1", first)
			}
			attachIP(t, r, "thief", AttachSpec{Network: "n1", IP: first})
			got := attachIP(t, r, "web", AttachSpec{Network: "n1"})
			if got == first || !sub.Contains(netip.MustParseAddr(got)) {
				t.Fatalf("web got %s; want another address of %s", got, sub)
			}
		})
	}
}

// Without static or sticky address: a local network hands addresses out
// next-fit (a released one is not reused at once, docs/ipam.md); a
// global one the lowest free, other names' sticky addresses last.
func TestAllocationOrder(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		r := policyRig(t, false)
		sub := r.ns("n1").rec.Subnet
		for i, name := range []string{"s2", "s3", "s4"} {
			if got := attachIP(t, r, name, AttachSpec{Network: "n1"}); got != addrAt(sub, i+2) {
				t.Fatalf("%s got %s, want %s", name, got, addrAt(sub, i+2))
			}
		}
		if err := r.e.RemoveSandbox(r.ctx, "s2", false); err != nil {
			t.Fatal(err)
		}
		r.awaitFree("n1", addrAt(sub, 2))
		if got := attachIP(t, r, "s5", AttachSpec{Network: "n1"}); got != addrAt(sub, 5) {
			t.Fatalf("s5 got %s, want %s (next-fit)", got, addrAt(sub, 5))
		}
	})
	t.Run("global", func(t *testing.T) {
		r := policyRig(t, true)
		sub := r.ns("n1").rec.Subnet
		for i, name := range []string{"s2", "s3", "s4"} {
			if got := attachIP(t, r, name, AttachSpec{Network: "n1"}); got != addrAt(sub, i+2) {
				t.Fatalf("%s got %s, want %s", name, got, addrAt(sub, i+2))
			}
		}
		for _, name := range []string{"s2", "s3"} {
			if err := r.e.RemoveSandbox(r.ctx, name, false); err != nil {
				t.Fatal(err)
			}
		}
		// .2 and .3 are free but remembered for s2 and s3: a new name gets .5.
		if got := attachIP(t, r, "s5", AttachSpec{Network: "n1"}); got != addrAt(sub, 5) {
			t.Fatalf("s5 got %s, want %s", got, addrAt(sub, 5))
		}
	})
}

// A full subnet refuses the next attach as forbidden, and the refused
// sandbox leaves nothing behind.
func TestSubnetExhausted(t *testing.T) {
	for _, global := range []bool{false, true} {
		t.Run(scopeName(global), func(t *testing.T) {
			r := newRig(t, rigOpts(global)...)
			drv, subnet := "bridge", "10.30.0.0/29"
			if global {
				drv = "overlay"
			}
			r.network("n1", drv, subnet, func(s *NetworkSpec) { s.Internal = true })
			files := len(r.nsx.Files())
			for i := 2; i <= 6; i++ { // .1 is the gateway, .7 the broadcast address
				attachIP(t, r, fmt.Sprintf("s%d", i), AttachSpec{Network: "n1"})
			}
			_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "overflow", Networks: []AttachSpec{{Network: "n1"}}})
			wantKind(t, err, KindForbidden, "attach to a full subnet")
			if _, err := r.e.Sandbox("overflow"); err == nil {
				t.Error("the refused sandbox was kept")
			}
			if got := len(r.nsx.Files()); got != files+5 {
				t.Errorf("%d namespace files, want %d", got, files+5)
			}
			if p := r.pending("n1"); p != 0 {
				t.Errorf("%d attaches pending", p)
			}
		})
	}
}

func rigOpts(global bool) []rigOption {
	if global {
		return []rigOption{withCluster()}
	}
	return nil
}

// policyRig has network n1 on 10.40.0.0/24: a bridge network, or an
// internal overlay network when global.
func policyRig(t *testing.T, global bool) *rig {
	r := newRig(t, rigOpts(global)...)
	drv := "bridge"
	if global {
		drv = "overlay"
	}
	r.network("n1", drv, "10.40.0.0/24", func(s *NetworkSpec) { s.Internal = true })
	return r
}

// attachIP creates sandbox name (when it does not exist) or connects it,
// and returns the address its endpoint on a.Network got.
func attachIP(t *testing.T, r *rig, name string, a AttachSpec) string {
	t.Helper()
	if _, err := r.e.Sandbox(name); err != nil {
		if _, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: name, Networks: []AttachSpec{a}}); err != nil {
			t.Fatalf("create %q on %s: %v", name, a.Network, err)
		}
	} else if err := r.e.Connect(r.ctx, a.Network, name, a); err != nil {
		t.Fatalf("connect %q to %s: %v", name, a.Network, err)
	}
	ep := endpointOn(r.getSandbox(name), r.ns(a.Network).rec.ID)
	if ep == nil {
		t.Fatalf("%q has no endpoint on %s", name, a.Network)
	}
	return ep.Address.Addr().String()
}

// addrAt is the i-th address of p.
func addrAt(p netip.Prefix, i int) string {
	a := p.Masked().Addr()
	for range i {
		a = a.Next()
	}
	return a.String()
}
