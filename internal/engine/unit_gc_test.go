package engine

// Garbage collection at Start (gc.go): what Tether owns and no record
// names goes; what the records name stays.

import (
	"errors"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/store"
)

// Marked host links whose owner is no network or endpoint on record are
// swept by their driver; the links of networks and endpoints stay.
func TestGCSweepsUnknownLinks(t *testing.T) {
	r := newRig(t)
	n := r.network("n1", "bridge", "10.10.0.0/24")
	sb := r.sandbox("web", "n1")
	r.stop()
	stray := newID()
	r.drv["bridge"].AddLink(stray, "fkstray")          // a crash after the veth, before the record
	r.drv["ptp"].AddLink(newID(), "ptpstray")          // every driver that sweeps is asked
	r.drv["bridge"].AddLink(newID(), n.BridgeName+"x") // a removed network's bridge
	r.start()
	want := map[string]string{n.ID: n.BridgeName, sb.Endpoints[0].ID: sb.Endpoints[0].HostIfName,
		r.ns(DefaultNetworkName).rec.ID: DefaultBridge}
	if got := r.drv["bridge"].Links(); !maps.Equal(got, want) {
		t.Errorf("bridge links %v, want %v", got, want)
	}
	if got := r.drv["ptp"].Links(); len(got) != 0 {
		t.Errorf("ptp links %v, want none", got)
	}
}

// Namespace files under exec-root/ns that no sandbox names (a crash after
// the namespace was made, before its record) are deleted through the
// namespace maker; the sandboxes' and the host's stay.
func TestGCNamespaceFiles(t *testing.T) {
	r := newRig(t)
	sb := r.sandbox("web")
	nsDir := filepath.Join(r.cfg.ExecRoot, "ns")
	orphan := filepath.Join(nsDir, newID()+".net")
	r.stop()
	if _, err := r.nsx.Create(orphan); err != nil { // a namespace the fake knows, no record
		t.Fatal(err)
	}
	plain := filepath.Join(nsDir, "leftover.mnt") // a file of an earlier version
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(nsDir, "subdir")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	r.start()
	if slices.Contains(r.nsx.Files(), orphan) {
		t.Error("orphan namespace not deleted")
	}
	for _, p := range []string{orphan, plain} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it deleted", p, err)
		}
	}
	for _, p := range []string{sb.NetNS, r.e.hostNSPath(), sub} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v, want it kept", p, err)
		}
	}
	if !slices.Contains(r.nsx.Files(), sb.NetNS) {
		t.Error("a sandbox's namespace was deleted")
	}
}

// File directories of sandboxes without a record are removed.
func TestGCSandboxDirs(t *testing.T) {
	r := newRig(t)
	sb := r.sandbox("web")
	dir := filepath.Join(r.cfg.ExecRoot, "sandboxes")
	r.stop()
	own, orphan := filepath.Join(dir, sb.ID), filepath.Join(dir, newID())
	for _, d := range []string{own, orphan} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "hosts"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r.start()
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan directory: %v, want it removed", err)
	}
	if _, err := os.Stat(own); err != nil {
		t.Errorf("live sandbox's directory: %v", err)
	}
}

// The store: each network's bitmap is made to hold exactly its endpoints'
// addresses (a leaked one freed, a lost one taken again); bitmaps and
// sticky addresses of networks that no longer exist are deleted.
func TestGCStore(t *testing.T) {
	r := newRig(t)
	n := r.network("n1", "bridge", "10.10.0.0/24")
	r.sandbox("web", "n1") // 10.10.0.2
	r.stop()
	kv, err := r.st.Get(r.ctx, keyIPAM+n.ID)
	if err != nil {
		t.Fatal(err)
	}
	var sub ipam.Subnet
	if err := sub.UnmarshalBinary(kv.Value); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Allocate(netip.MustParseAddr("10.10.0.9")); err != nil { // leaked: no endpoint
		t.Fatal(err)
	}
	sub.Release(netip.MustParseAddr("10.10.0.2")) // lost: the endpoint's bit
	b, err := sub.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ghost := newID()
	if _, err := r.st.Txn(r.ctx, nil, []store.Op{store.Put(keyIPAM+n.ID, b), store.Put(keyIPAM+ghost, b),
		store.Put(keySticky+ghost+"/web", []byte("10.10.0.2"))}); err != nil {
		t.Fatal(err)
	}
	r.start()
	if r.inUse("n1", "10.10.0.9") {
		t.Error("leaked address not freed")
	}
	if !r.inUse("n1", "10.10.0.2") {
		t.Error("an endpoint's address left free")
	}
	for _, k := range []string{keyIPAM + ghost, keySticky + ghost + "/web"} {
		if _, err := r.st.Get(r.ctx, k); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: %v, want it deleted", k, err)
		}
	}
	if got := r.sticky("n1", "web"); got != "10.10.0.2" {
		t.Errorf("sticky address of a live network %q, want it kept", got)
	}
	// The next attach does not get the endpoint's address.
	if got := attachIP(t, r, "next", AttachSpec{Network: "n1"}); got == "10.10.0.2" {
		t.Error("an endpoint's address handed out twice")
	}
}
