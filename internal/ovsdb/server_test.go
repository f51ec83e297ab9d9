package ovsdb_test

// Integration tests against a real ovsdb-server (ovstest.StartDB: a
// private database and socket; no root, no ovs-vswitchd). They check what
// the fake cannot: that the server accepts the requests and that the
// helpers' semantics (garbage collection of unreferenced rows, indexes,
// wait guards) are as the package documents.

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/ovsdb"
	"github.com/tether-net/tether/internal/ovsdb/ovstest"
)

func dialServer(t *testing.T) *ovsdb.Client {
	t.Helper()
	addr := ovstest.StartDB(t)
	c, err := ovsdb.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestServerBridgeLifecycle(t *testing.T) {
	c := dialServer(t)
	if err := c.Echo(ctx); err != nil {
		t.Fatal(err)
	}
	owner := ovsdb.Map{"tether-owner": "n1"}
	spec := ovsdb.BridgeSpec{Name: "tb0", DatapathType: "netdev", ExternalIDs: owner, Port: ovsdb.PortSpec{Tag: 5, MTU: 1400}}
	b, created, err := c.EnsureBridge(ctx, spec)
	if err != nil || !created {
		t.Fatalf("EnsureBridge: %v created=%v", err, created)
	}
	again, created, err := c.EnsureBridge(ctx, spec)
	if err != nil || created || again.UUID != b.UUID || again.DatapathType != "netdev" || !reflect.DeepEqual(again.ExternalIDs, owner) {
		t.Fatalf("EnsureBridge again: %+v created=%v %v", again, created, err)
	}
	ports, err := c.ListPorts(ctx, "tb0")
	if err != nil || len(ports) != 1 || ports[0].Name != "tb0" || ports[0].Tag != 5 {
		t.Fatalf("ports of a new bridge: %+v %v", ports, err)
	}

	t.Run("add port, then again with other settings", func(t *testing.T) {
		ids := ovsdb.Map{"tether-owner": "ep1", "tether-network": "n1"}
		p, err := c.AddPort(ctx, "tb0", ovsdb.PortSpec{Name: "vth1", Tag: 10, ExternalIDs: ids})
		if err != nil {
			t.Fatal(err)
		}
		p2, err := c.AddPort(ctx, "tb0", ovsdb.PortSpec{Name: "vth1", Tag: -1, Protected: true, ExternalIDs: ids})
		if err != nil || p2.UUID != p.UUID {
			t.Fatalf("again: %+v %v", p2, err)
		}
		got, err := c.FindPort(ctx, "vth1")
		if err != nil || got == nil || got.Tag != -1 || !got.Protected || !reflect.DeepEqual(got.ExternalIDs, ids) || len(got.Interfaces) != 1 {
			t.Fatalf("FindPort: %+v %v", got, err)
		}
		found, err := c.FindPorts(ctx, ovsdb.Map{"tether-network": "n1"})
		if err != nil || len(found) != 1 || found[0].UUID != p.UUID {
			t.Fatalf("FindPorts: %+v %v", found, err)
		}
	})
	t.Run("a port name on another bridge is refused", func(t *testing.T) {
		if _, _, err := c.EnsureBridge(ctx, ovsdb.BridgeSpec{Name: "tb1", Port: ovsdb.PortSpec{Tag: -1}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.AddPort(ctx, "tb1", ovsdb.PortSpec{Name: "vth1", Tag: 1}); err == nil {
			t.Fatal("port of tb0 added to tb1")
		}
	})
	t.Run("no such bridge leaves no row behind", func(t *testing.T) {
		_, err := c.AddPort(ctx, "nope", ovsdb.PortSpec{Name: "vth9", Tag: 1})
		if !errors.Is(err, ovsdb.ErrNoBridge) {
			t.Fatalf("error %v, want ErrNoBridge", err)
		}
		if p, err := c.FindPort(ctx, "vth9"); err != nil || p != nil {
			t.Fatalf("orphan port %+v %v", p, err)
		}
		if _, err := c.ListPorts(ctx, "nope"); !errors.Is(err, ovsdb.ErrNoBridge) {
			t.Fatalf("ListPorts: %v", err)
		}
	})
	t.Run("duplicate names violate the index", func(t *testing.T) {
		_, err := c.Transact(ctx, ovsdb.DB,
			ovsdb.Insert("Bridge", ovsdb.Row{"name": "tb0"}, "b"),
			ovsdb.Mutate("Open_vSwitch", []ovsdb.Mutation{ovsdb.Mut("bridges", "insert", ovsdb.NamedUUID("b"))}))
		if !ovsdb.IsTxError(err, "constraint violation") {
			t.Fatalf("error %v, want a constraint violation", err)
		}
	})
	t.Run("delete port", func(t *testing.T) {
		p, _ := c.FindPort(ctx, "vth1")
		for range 2 { // the second time it is gone: success
			if err := c.DeletePort(ctx, p.UUID); err != nil {
				t.Fatal(err)
			}
		}
		if got, _ := c.FindPort(ctx, "vth1"); got != nil {
			t.Fatalf("port left: %+v", got)
		}
		res, err := c.Transact(ctx, ovsdb.DB, ovsdb.Select("Interface", []string{"name"}, ovsdb.Cond("name", "==", "vth1")))
		if err != nil || len(res[0].Rows) != 0 {
			t.Fatalf("interface left: %+v %v", res, err)
		}
	})
	t.Run("delete bridge guarded by its ports", func(t *testing.T) {
		stale, _ := c.FindBridge(ctx, "tb0")
		if _, err := c.AddPort(ctx, "tb0", ovsdb.PortSpec{Name: "vth2", Tag: 1}); err != nil {
			t.Fatal(err)
		}
		if err := c.DeleteBridge(ctx, stale); !errors.Is(err, ovsdb.ErrChanged) {
			t.Fatalf("stale delete: %v, want ErrChanged", err)
		}
		now, _ := c.FindBridge(ctx, "tb0")
		if err := c.DeleteBridge(ctx, now); err != nil {
			t.Fatal(err)
		}
		if err := c.DeleteBridge(ctx, now); err != nil {
			t.Fatalf("gone already: %v", err)
		}
		if b, _ := c.FindBridge(ctx, "tb0"); b != nil {
			t.Fatalf("bridge left: %+v", b)
		}
		if p, _ := c.FindPort(ctx, "vth2"); p != nil {
			t.Fatalf("port of a deleted bridge left: %+v", p)
		}
	})
}

// TestServerRootRow: without the Open_vSwitch row nothing can be added;
// Init makes exactly one.
func TestServerRootRow(t *testing.T) {
	c := dialServer(t)
	if _, err := c.Transact(ctx, ovsdb.DB, ovsdb.Delete("Open_vSwitch")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.EnsureBridge(ctx, ovsdb.BridgeSpec{Name: "tb0"}); !errors.Is(err, ovsdb.ErrNoRoot) {
		t.Fatalf("EnsureBridge: %v, want ErrNoRoot", err)
	}
	if b, _ := c.FindBridge(ctx, "tb0"); b != nil {
		t.Fatalf("unreferenced bridge kept: %+v", b)
	}
	for range 2 {
		if err := c.Init(ctx); err != nil {
			t.Fatal(err)
		}
	}
	res, err := c.Transact(ctx, ovsdb.DB, ovsdb.Select("Open_vSwitch", []string{"_uuid"}))
	if err != nil || len(res[0].Rows) != 1 {
		t.Fatalf("root rows: %+v %v", res, err)
	}
	if _, created, err := c.EnsureBridge(ctx, ovsdb.BridgeSpec{Name: "tb0"}); err != nil || !created {
		t.Fatalf("after Init: %v", err)
	}
}

// TestServerAppliedWithoutVSwitchd: with no ovs-vswitchd nothing applies
// the configuration; Applied waits for its context.
func TestServerAppliedWithoutVSwitchd(t *testing.T) {
	c := dialServer(t)
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := c.Applied(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Applied: %v, want the deadline", err)
	}
}

// TestServerInterfaceError: ovsdb-server alone records no error.
func TestServerInterfaceError(t *testing.T) {
	c := dialServer(t)
	if _, _, err := c.EnsureBridge(ctx, ovsdb.BridgeSpec{Name: "tb0", Port: ovsdb.PortSpec{Tag: -1}}); err != nil {
		t.Fatal(err)
	}
	if msg, err := c.InterfaceError(ctx, "tb0"); err != nil || msg != "" {
		t.Fatalf("InterfaceError: %q %v", msg, err)
	}
}
