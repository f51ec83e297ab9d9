package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/ipam"
)

// A claim with Publish writes the address key, the endpoint record and the
// sticky address in one transaction, under the cluster's key layout; a
// name's sticky address is kept for it (others get it only when nothing
// else is free) and given back when it returns, on any node.
func TestClaimAddressPublishAndSticky(t *testing.T) {
	st := sharedStore(t)
	a, b := node(t, st, "a", time.Second), node(t, st, "b", time.Second)
	ctx := context.Background()
	n, err := a.CreateNetwork(ctx, NetworkRecord{ID: "n", Name: "n", Subnet: netip.MustParsePrefix("10.0.0.0/29")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	claim := func(c *Cluster, name string) EndpointRecord {
		t.Helper()
		pub := EndpointRecord{ID: "ep-" + name, NetworkID: n.ID, SandboxID: "sb-" + name, SandboxName: name}
		p, err := c.ClaimAddress(ctx, AddressRequest{NetworkID: n.ID, EndpointID: pub.ID, SandboxName: name,
			Publish: &pub, MACFor: func(a netip.Addr) string { return "02:42:0a:00:00:0" + a.String()[len(a.String())-1:] }})
		if err != nil {
			t.Fatalf("claim for %s: %v", name, err)
		}
		pub.Address = p
		return pub
	}
	web := claim(a, "web")
	if web.Address.String() != "10.0.0.2/29" {
		t.Fatalf("first claim = %v, want 10.0.0.2/29 (lowest; .1 is the gateway)", web.Address)
	}
	ak, _ := st.Get(ctx, keyAddrs+"n/10.0.0.2")
	ek, _ := st.Get(ctx, keyEndpoints+"n/ep-web")
	sk, _ := st.Get(ctx, keySticky+"n/web")
	var cl Claim
	var ep EndpointRecord
	if json.Unmarshal(ak.Value, &cl) != nil || json.Unmarshal(ek.Value, &ep) != nil || string(sk.Value) != "10.0.0.2" {
		t.Fatalf("keys: claim %q, endpoint %q, sticky %q", ak.Value, ek.Value, sk.Value)
	}
	if ak.Revision == 0 || ek.Revision != ak.Revision || sk.Revision != ak.Revision {
		t.Errorf("revisions: claim %d, endpoint %d, sticky %d; want one transaction", ak.Revision, ek.Revision, sk.Revision)
	}
	if cl != (Claim{Node: "a", Endpoint: "ep-web", Sandbox: "web"}) || ep.Address != web.Address || ep.MAC != "02:42:0a:00:00:02" || ep.Node != "a" || ep.VTEP != a.Self().Addr {
		t.Errorf("claim %+v, endpoint %+v", cl, ep)
	}
	if err := a.RemoveEndpoint(ctx, ep); err != nil {
		t.Fatal(err)
	}
	// a claim key as stored before the allocator moved to ipam is honoured
	old, _ := json.Marshal(Claim{Node: "b", Endpoint: "ep-old", Sandbox: "old"})
	if _, err := st.Put(ctx, keyAddrs+"n/10.0.0.3", old, 0); err != nil {
		t.Fatal(err)
	}
	// .2 is web's: db gets .4, the lowest other free address
	if db := claim(b, "db"); db.Address.String() != "10.0.0.4/29" {
		t.Errorf("db got %v, want 10.0.0.4/29", db.Address)
	}
	// web comes back on the other node and finds its address
	if web2 := claim(b, "web"); web2.Address != web.Address {
		t.Errorf("web came back with %v, want %v", web2.Address, web.Address)
	}
	// others' sticky addresses are used when nothing else is free: .5 and
	// .6 are free, then db's .4 would be next but is held; fill and check
	if err := b.ReleaseAddress(ctx, n.ID, netip.MustParseAddr("10.0.0.4")); err != nil {
		t.Fatal(err)
	}
	got := []string{claim(a, "x").Address.String(), claim(a, "y").Address.String(), claim(a, "z").Address.String()}
	if got[0] != "10.0.0.5/29" || got[1] != "10.0.0.6/29" || got[2] != "10.0.0.4/29" {
		t.Errorf("claims x, y, z = %v; want .5, .6, then db's sticky .4", got)
	}
}

// ClaimAddress errors match the cluster's sentinels (the engine maps them)
// and ipam's classes (the one attach pipeline maps those).
func TestClaimAddressErrorClasses(t *testing.T) {
	st := sharedStore(t)
	a := node(t, st, "a", time.Second)
	ctx := context.Background()
	n, err := a.CreateNetwork(ctx, NetworkRecord{ID: "n", Name: "n", Subnet: netip.MustParsePrefix("10.0.0.0/30")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ClaimAddress(ctx, AddressRequest{NetworkID: n.ID, EndpointID: "e1", SandboxName: "s1"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name          string
		static        string
		cluster, ipam error // ipam nil: a *ipam.FieldError for "ip"
	}{
		{"static taken", "10.0.0.2", ErrAddrInUse, ipam.ErrAddrInUse},
		{"static gateway", "10.0.0.1", ErrAddrInUse, ipam.ErrAddrInUse}, // as on local networks
		{"static outside", "10.9.0.2", ErrOutOfSubnet, nil},
		{"full", "", ErrNoAddress, ipam.ErrNoAddress},
	} {
		r := AddressRequest{NetworkID: n.ID, EndpointID: "e2", SandboxName: "s2"}
		if tt.static != "" {
			r.Static = netip.MustParseAddr(tt.static)
		}
		_, err := a.ClaimAddress(ctx, r)
		var fe *ipam.FieldError
		ipamOK := errors.As(err, &fe) && fe.Field == "ip"
		if tt.ipam != nil {
			ipamOK = errors.Is(err, tt.ipam)
		}
		if !errors.Is(err, tt.cluster) || !ipamOK {
			t.Errorf("%s: %v; want %v and ipam's class", tt.name, err, tt.cluster)
		}
	}
}

// A failed attach's rollback leaves no trace: the endpoint record, the
// claim and the sticky key the claim's transaction set are gone, so the
// address is the lowest free one again for every name; a sticky key moved
// by a later attach is left alone.
func TestRollbackEndpoint(t *testing.T) {
	st := sharedStore(t)
	a := node(t, st, "a", time.Second)
	ctx := context.Background()
	n, err := a.CreateNetwork(ctx, NetworkRecord{ID: "n", Name: "n", Subnet: netip.MustParsePrefix("10.0.0.0/29")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	claim := func(name, id string) EndpointRecord {
		t.Helper()
		pub := EndpointRecord{ID: id, NetworkID: n.ID, SandboxID: "sb-" + name, SandboxName: name}
		p, err := a.ClaimAddress(ctx, AddressRequest{NetworkID: n.ID, EndpointID: id, SandboxName: name,
			Publish: &pub, MACFor: func(netip.Addr) string { return "02:42:0a:00:00:02" }})
		if err != nil {
			t.Fatalf("claim for %s: %v", name, err)
		}
		pub.Address = p
		return pub
	}
	failed := claim("alpha", "ep1")
	if err := a.RollbackEndpoint(ctx, failed); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{keyEndpoints + "n/ep1", keyAddrs + "n/10.0.0.2", keySticky + "n/alpha"} {
		if _, err := st.Get(ctx, k); err == nil {
			t.Errorf("%s left after the rollback", k)
		}
	}
	if got := claim("beta", "ep2"); got.Address.Addr().String() != "10.0.0.2" {
		t.Errorf("after the rollback beta got %s, want the lowest, 10.0.0.2", got.Address)
	}
	// alpha's sticky key now names another address: a rollback of an
	// older claim of alpha's leaves it.
	moved := claim("alpha", "ep3")
	stale := EndpointRecord{ID: "ep1", NetworkID: n.ID, SandboxName: "alpha", Address: netip.MustParsePrefix("10.0.0.5/29")}
	if err := a.RollbackEndpoint(ctx, stale); err != nil {
		t.Fatal(err)
	}
	if kv, err := st.Get(ctx, keySticky+"n/alpha"); err != nil || string(kv.Value) != moved.Address.Addr().String() {
		t.Errorf("alpha's sticky key after an unrelated rollback: %v %v, want %s", kv, err, moved.Address.Addr())
	}
}
