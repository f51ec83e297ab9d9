package engine

// Restore on start (restore.go): the records are loaded and the "kernel"
// (the fakes, which outlive the engine as the kernel outlives the daemon)
// is made to match them without touching what is intact.

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/store"
)

// A restart leaves intact endpoints alone: the driver is asked to check
// them (Repair) and rebuilds nothing; no record changes.
func TestRestoreKeepsIntactEndpoints(t *testing.T) {
	r := newRig(t)
	r.network("n1", "bridge", "10.10.0.0/24")
	r.network("p1", "ptp", "10.10.3.0/24")
	sb := r.sandbox("web", "n1", "p1")
	kernel := r.drv["bridge"].Endpoints()
	from := map[string]int{}
	for name, f := range r.drv {
		from[name] = len(f.Calls())
	}
	r.restart()
	for name, f := range r.drv {
		calls := f.Calls()[from[name]:]
		for _, c := range calls {
			if c == "Repair.rebuild" || c == "Join" || c == "Leave" || c == "Detach" {
				t.Errorf("driver %s: %s on restart of intact endpoints (calls %v)", name, c, calls)
			}
		}
	}
	if got := r.drv["bridge"].Calls()[from["bridge"]:]; !slices.Contains(got, "Repair") {
		t.Errorf("bridge endpoints not checked on restart: calls %v", got)
	}
	if got := r.getSandbox("web"); !sameJSON(t, got.Endpoints, sb.Endpoints) {
		t.Errorf("endpoints %+v after restart, want %+v", got.Endpoints, sb.Endpoints)
	}
	if rec, _ := r.stored(sb.ID); !sameJSON(t, rec.Endpoints, sb.Endpoints) {
		t.Errorf("stored endpoints changed: %+v", rec.Endpoints)
	}
	if got := r.drv["bridge"].Endpoints(); !sameJSON(t, got, kernel) {
		t.Errorf("driver endpoints %+v, want %+v", got, kernel)
	}
	if !r.inUse("n1", "10.10.0.2") || !r.inUse("p1", "10.10.3.2") {
		t.Error("addresses of restored endpoints are free")
	}
}

// A broken endpoint is rebuilt in place, with the default route when it is
// the sandbox's first route-carrying endpoint, and its new host interface
// is recorded; the sandbox's other endpoint is not touched.
func TestRestoreRepairsBrokenEndpoint(t *testing.T) {
	r := newRig(t)
	r.network("n1", "bridge", "10.10.1.0/24")
	r.network("n2", "bridge", "10.10.2.0/24")
	sb := r.sandbox("web", "n1", "n2")
	broken, intact := sb.Endpoints[0], sb.Endpoints[1]
	r.stop()
	r.drv["bridge"].Break(broken.ID)
	from := len(r.drv["bridge"].Calls())
	r.start()
	if n := count(r.drv["bridge"].Calls()[from:], "Repair.rebuild"); n != 1 {
		t.Fatalf("%d rebuilds, want 1 (calls %v)", n, r.drv["bridge"].Calls()[from:])
	}
	j := joined(t, r, broken.ID)
	if !j.Endpoint.DefaultRoute || j.NSPath != sb.NetNS || j.Endpoint.Address != broken.Address || j.Endpoint.IfName != "eth0" {
		t.Errorf("rebuilt %+v in %s; want eth0 %s with the default route in %s", j.Endpoint, j.NSPath, broken.Address, sb.NetNS)
	}
	got := r.getSandbox("web")
	if got.Endpoints[0].HostIfName == broken.HostIfName || got.Endpoints[0].HostIfName != j.Endpoint.HostIfName {
		t.Errorf("host interface %q, want the new one %q", got.Endpoints[0].HostIfName, j.Endpoint.HostIfName)
	}
	if rec, _ := r.stored(sb.ID); rec.Endpoints[0].HostIfName != j.Endpoint.HostIfName {
		t.Errorf("stored host interface %q, want %q", rec.Endpoints[0].HostIfName, j.Endpoint.HostIfName)
	}
	if !sameJSON(t, got.Endpoints[1], intact) {
		t.Errorf("intact endpoint changed: %+v", got.Endpoints[1])
	}
	if links := r.drv["bridge"].Links(); links[broken.ID] != j.Endpoint.HostIfName || links[intact.ID] != intact.HostIfName {
		t.Errorf("host links %v", links)
	}
}

// A sandbox whose namespace was deleted while the daemon was down (no
// file, no process in it) is removed on start: record, addresses, files.
func TestRestoreDropsDeadSandbox(t *testing.T) {
	r := newRig(t)
	r.network("n1", "bridge", "10.10.0.0/24")
	dead := r.sandbox("gone", "n1")
	alive := r.sandbox("alive", "n1")
	r.stop()
	if err := r.nsx.Delete(dead.NetNS); err != nil { // ip netns delete, say
		t.Fatal(err)
	}
	r.start()
	if _, err := r.e.Sandbox("gone"); KindOf(err) != KindNotFound {
		t.Fatalf("dead sandbox: %v, want it removed", err)
	}
	if _, ok := r.stored(dead.ID); ok {
		t.Error("dead sandbox's record kept in the store")
	}
	if r.inUse("n1", dead.Endpoints[0].Address.Addr().String()) {
		t.Error("dead sandbox's address still taken")
	}
	if got := r.getSandbox("alive"); !sameJSON(t, got.Endpoints, alive.Endpoints) {
		t.Errorf("live sandbox changed: %+v", got.Endpoints)
	}
	if !r.inUse("n1", alive.Endpoints[0].Address.Addr().String()) {
		t.Error("live sandbox's address freed")
	}
	// The address is handed out again.
	if got := attachIP(t, r, "next", AttachSpec{Network: "n1", IP: dead.Endpoints[0].Address.Addr().String()}); got != "10.10.0.2" {
		t.Errorf("got %s", got)
	}
}

// A namespace whose file was lost (the daemon's mount namespace went with
// it) but which a process still runs in is bound to its file again, and
// the sandbox is kept as it was.
func TestRestoreRebindsLostFile(t *testing.T) {
	r := newRig(t)
	r.network("n1", "bridge", "10.10.0.0/24")
	sb := r.sandbox("web", "n1")
	if err := r.nsx.AddProcess(424242, sb.NetNS); err != nil {
		t.Fatal(err)
	}
	r.stop()
	r.nsx.LoseFile(sb.NetNS)
	from := len(r.drv["bridge"].Calls())
	r.start()
	got, err := r.e.Sandbox("web")
	if err != nil {
		t.Fatal("sandbox with a live namespace removed:", err)
	}
	if !slices.Contains(r.nsx.Files(), sb.NetNS) {
		t.Fatalf("namespace file not bound again (files %v)", r.nsx.Files())
	}
	id, err := r.nsx.IDOf(sb.NetNS)
	if err != nil || id.Ino != sb.NSInode || id.Dev != sb.NSDev {
		t.Errorf("file bound to %v (%v), want the sandbox's namespace %d:%d", id, err, sb.NSDev, sb.NSInode)
	}
	if len(got.Warnings) != 0 {
		t.Errorf("warnings %v", got.Warnings)
	}
	if !sameJSON(t, got.Endpoints, sb.Endpoints) || !r.inUse("n1", "10.10.0.2") {
		t.Errorf("endpoints %+v, want %+v kept", got.Endpoints, sb.Endpoints)
	}
	if calls := r.drv["bridge"].Calls()[from:]; slices.Contains(calls, "Repair.rebuild") {
		t.Errorf("intact endpoint rebuilt: %v", calls)
	}
	// It works as any other sandbox: attach, remove.
	r.network("n2", "bridge", "10.10.2.0/24")
	if err := r.e.Connect(r.ctx, "n2", "web", AttachSpec{}); err != nil {
		t.Fatal(err)
	}
}

// Interfaces no endpoint names in a namespace Tether made (a crash in the
// middle of an attach) are deleted on start; the endpoints' are kept.
func TestRestoreRemovesStrayLinks(t *testing.T) {
	r := newRig(t)
	r.network("n1", "bridge", "10.10.0.0/24")
	sb := r.sandbox("web", "n1")
	for _, name := range []string{"eth0", "tmp5e8a2", "eth1"} {
		if err := r.nsx.AddLink(sb.NetNS, name); err != nil {
			t.Fatal(err)
		}
	}
	r.restart()
	if got := r.nsx.Links(sb.NetNS); !slices.Equal(got, []string{"eth0"}) {
		t.Fatalf("links %v in the sandbox, want [eth0]", got)
	}
}

// A network whose kernel objects went while the daemon was down is made
// again; the ones that are there are made sure of (idempotent).
func TestRestoreRecreatesNetwork(t *testing.T) {
	r := newRig(t)
	n := r.network("n1", "bridge", "10.10.0.0/24")
	r.stop()
	if err := r.drv["bridge"].DeleteNetwork(context.Background(), &driver.Network{ID: n.ID}); err != nil {
		t.Fatal(err)
	}
	r.start()
	if !slices.Contains(r.drv["bridge"].Networks(), n.ID) {
		t.Fatal("network not made again")
	}
	if links := r.drv["bridge"].Links(); links[n.ID] != n.BridgeName {
		t.Errorf("bridge link %q, want %q", links[n.ID], n.BridgeName)
	}
}

// A global endpoint whose sandbox died while the daemon was down is
// withdrawn from the cluster store on start, its address released.
func TestRestoreWithdrawsDeadGlobalEndpoint(t *testing.T) {
	r := newRig(t, withCluster())
	n := r.network("ov", "overlay", "10.20.0.0/24", func(s *NetworkSpec) { s.Internal = true })
	dead := r.sandbox("gone", "ov")
	alive := r.sandbox("alive", "ov")
	if err := r.e.FlushGlobal(r.ctx); err != nil { // the records follow the attaches
		t.Fatal(err)
	}
	if eps, _ := r.cl.Endpoints(r.ctx, n.ID); len(eps) != 2 {
		t.Fatalf("cluster endpoints %+v, want 2", eps)
	}
	r.stop()
	if err := r.nsx.Delete(dead.NetNS); err != nil {
		t.Fatal(err)
	}
	r.start()
	eps, err := r.cl.Endpoints(r.ctx, n.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 1 || eps[0].ID != alive.Endpoints[0].ID {
		t.Fatalf("cluster endpoints %+v, want only the live sandbox's", eps)
	}
	claims := r.addressClaims(n.ID)
	if len(claims) != 1 {
		t.Fatalf("claims %v, want the live sandbox's only", claims)
	}
	for _, c := range claims {
		if c.Endpoint != alive.Endpoints[0].ID {
			t.Errorf("claim %+v, want the live endpoint's", c)
		}
	}
}

func count(xs []string, x string) int {
	n := 0
	for _, y := range xs {
		if y == x {
			n++
		}
	}
	return n
}

// A namespace whose file is gone with no process left in it is gone:
// the sandbox is removed on start whether its file was deleted or lost.
func TestRestoreDropsSandboxWithoutFileOrProcess(t *testing.T) {
	r := newRig(t)
	r.network("n1", "bridge", "10.10.0.0/24")
	sb := r.sandbox("gone", "n1")
	r.stop()
	r.nsx.LoseFile(sb.NetNS) // the mount namespace holding it went
	for _, f := range r.drv {
		f.TeardownNamespace(sb.NetNS) // and with its last reference, the namespace
	}
	r.start()
	if _, err := r.e.Sandbox("gone"); KindOf(err) != KindNotFound {
		t.Fatalf("sandbox: %v, want it removed", err)
	}
	if r.inUse("n1", "10.10.0.2") {
		t.Error("its address still taken")
	}
}

// A lost file that cannot be bound again from the process still in the
// namespace: the sandbox is kept untouched and reported degraded, until
// an operation finds the file can be bound.
func TestRestoreDegradedSandbox(t *testing.T) {
	r := newRig(t)
	r.network("n1", "bridge", "10.10.0.0/24")
	sb := r.sandbox("web", "n1")
	if err := r.nsx.AddProcess(424242, sb.NetNS); err != nil {
		t.Fatal(err)
	}
	r.stop()
	r.nsx.LoseFile(sb.NetNS)
	r.nsx.FailBindAt(sb.NetNS, errors.New("read-only file system"))
	from := len(r.drv["bridge"].Calls())
	r.start()
	got := r.getSandbox("web")
	if len(got.Warnings) != 1 || !strings.Contains(got.Warnings[0], "could not be bound again") {
		t.Fatalf("warnings %q, want the lost file reported", got.Warnings)
	}
	if w := r.e.Warnings(); !slices.ContainsFunc(w, func(s string) bool { return strings.Contains(s, "1 sandbox(es) degraded") }) {
		t.Errorf("daemon warnings %q, want the degraded sandbox counted", w)
	}
	if calls := r.drv["bridge"].Calls()[from:]; slices.Contains(calls, "Repair") || slices.Contains(calls, "Leave") {
		t.Errorf("a degraded sandbox's endpoints were touched: %v", calls)
	}
	if !sameJSON(t, got.Endpoints, sb.Endpoints) || !r.inUse("n1", "10.10.0.2") {
		t.Errorf("endpoints %+v, want them kept", got.Endpoints)
	}
	r.nsx.FailBindAt(sb.NetNS, nil)
	r.network("n2", "bridge", "10.10.2.0/24")
	if err := r.e.Connect(r.ctx, "n2", "web", AttachSpec{}); err != nil {
		t.Fatal(err)
	}
	if w := r.getSandbox("web").Warnings; len(w) != 0 || !slices.Contains(r.nsx.Files(), sb.NetNS) {
		t.Errorf("warnings %q, files %v: want the file bound again and the warning gone", w, r.nsx.Files())
	}
}

// Records of an earlier version are brought up to date on start: mount
// and UTS namespace files are dropped (their sandbox has files from now
// on), the network namespace's identity is filled in.
func TestRestoreUpgradesOldRecord(t *testing.T) {
	r := newRig(t)
	sb := r.sandbox("old")
	r.stop()
	rec, _ := r.stored(sb.ID)
	rec.MntNS, rec.UTSNS = sb.NetNS[:len(sb.NetNS)-4]+".mnt", sb.NetNS[:len(sb.NetNS)-4]+".uts"
	rec.NSDev, rec.NSInode = 0, 0
	r.put(keySandboxes+sb.ID, rec)
	r.start()
	got, _ := r.stored(sb.ID)
	if got.MntNS != "" || got.UTSNS != "" || !got.Files {
		t.Errorf("record %+v: want the mount and UTS files dropped, Files set", got)
	}
	if got.NSDev != sb.NSDev || got.NSInode != sb.NSInode {
		t.Errorf("namespace identity %d:%d, want %d:%d", got.NSDev, got.NSInode, sb.NSDev, sb.NSInode)
	}
	hosts, err := os.ReadFile(filepath.Join(r.cfg.ExecRoot, "sandboxes", sb.ID, "hosts"))
	if err != nil || !strings.Contains(string(hosts), "10.199.0.2\t"+sb.Hostname+" old") {
		t.Errorf("hosts file %q (%v), want the sandbox's address and names", hosts, err)
	}
}

// Endpoints on networks that no longer exist (removed while a record
// still named them) are dropped from the record on start.
func TestRestoreDropsOrphanEndpoints(t *testing.T) {
	r := newRig(t)
	n := r.network("n1", "bridge", "10.10.1.0/24")
	sb := r.sandbox("web", DefaultNetworkName, "n1")
	r.stop()
	if _, err := r.st.Txn(r.ctx, nil, []store.Op{store.Delete(keyNetworks + n.ID)}); err != nil {
		t.Fatal(err)
	}
	r.start()
	got := r.getSandbox("web")
	if len(got.Endpoints) != 1 || got.Endpoints[0].ID != sb.Endpoints[0].ID {
		t.Fatalf("endpoints %+v, want only the default network's", got.Endpoints)
	}
	if rec, _ := r.stored(sb.ID); len(rec.Endpoints) != 1 {
		t.Errorf("stored endpoints %+v", rec.Endpoints)
	}
	if _, ok := r.drv["bridge"].Links()[sb.Endpoints[1].ID]; ok {
		t.Error("the dropped endpoint's link was not swept")
	}
}

func (r *rig) put(key string, v any) {
	r.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.st.Txn(r.ctx, nil, []store.Op{store.Put(key, b)}); err != nil {
		r.t.Fatal(err)
	}
}
