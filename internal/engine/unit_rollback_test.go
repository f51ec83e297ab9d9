package engine

// Rollback of a failed attach, at every step of the pipeline, for a local
// and a global network, through Connect (the sandbox stays) and through
// CreateSandbox (the sandbox goes too): nothing is left in the fake
// driver, the records, the store, the bitmap, the cluster store or the
// held ports, and the network can be removed afterwards.

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/driver/drivertest"
	"github.com/tether-net/tether/internal/portmap"
)

// attachFailure is one way an attach fails.
type attachFailure struct {
	name   string
	point  string                    // fault point armed, or ""
	global bool                      // also run on a global network
	arm    func(*rig) []portmap.Spec // makes the attach fail; returns the ports it asks for
	kind   Kind                      // for failures that are not injected faults
	// committed: the failure comes after the commit: the attach stands
	// (recorded, in the driver), as after a crash there; a failed create
	// removes the sandbox as a whole.
	committed bool
}

func attachFailures() []attachFailure {
	fault := func(p string) attachFailure {
		return attachFailure{name: p, point: p, global: true, arm: func(r *rig) []portmap.Spec {
			arm(r.t, p)
			if r.cl != nil {
				return nil // overlay networks publish no ports
			}
			return []portmap.Spec{localPort("tcp"), localPort("udp")}
		}}
	}
	commit := fault("attach.after-commit")
	commit.committed = true
	return []attachFailure{
		fault("attach.after-reserve"),
		fault("attach.after-join"),
		fault("attach.after-publish"),
		commit,
		{name: "driver join fails", global: true, kind: KindInternal, arm: func(r *rig) []portmap.Spec {
			r.driverOf("n1").FailNext("Join", errors.New("no such device"))
			return nil
		}},
		{name: "firewall fails", kind: KindInternal, arm: func(r *rig) []portmap.Spec {
			r.fw.failPorts(errors.New("netlink: operation not permitted"))
			return []portmap.Spec{localPort("tcp")}
		}},
		{name: "host port taken", kind: KindConflict, arm: func(r *rig) []portmap.Spec {
			l, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				r.t.Fatal(err)
			}
			r.t.Cleanup(func() { l.Close() })
			p := localPort("tcp")
			p.HostPort = uint16(l.Addr().(*net.TCPAddr).Port)
			return []portmap.Spec{localPort("udp"), p}
		}},
	}
}

// rollbackRig is a rig with network n1 (a bridge network, or an internal
// overlay network when global) and sandbox "alpha" on the default network.
func rollbackRig(t *testing.T, global bool) *rig {
	var r *rig
	if global {
		r = newRig(t, withCluster())
		r.network("n1", "overlay", "10.20.0.0/24", func(s *NetworkSpec) { s.Internal = true })
	} else {
		r = newRig(t)
		r.network("n1", "bridge", "10.10.0.0/24")
	}
	r.sandbox("alpha")
	return r
}

func TestAttachRollbackConnect(t *testing.T) {
	for _, global := range []bool{false, true} {
		for _, f := range attachFailures() {
			if global && !f.global {
				continue
			}
			t.Run(scopeName(global)+"/"+f.name, func(t *testing.T) {
				r := rollbackRig(t, global)
				before := r.getSandbox("alpha")
				ports := f.arm(r)
				err := r.e.Connect(r.ctx, "n1", "alpha", AttachSpec{Ports: ports})
				disarm()
				f.check(t, err)
				if f.committed {
					// The attach stands: recorded, in the store and in the driver.
					ep := endpointOn(r.getSandbox("alpha"), r.ns("n1").rec.ID)
					if ep == nil {
						t.Fatal("the committed endpoint is gone after a failure after the commit")
					}
					if rec, _ := r.stored(before.ID); rec == nil || len(rec.Endpoints) != len(before.Endpoints)+1 {
						t.Errorf("stored record %+v, want the new endpoint recorded", rec)
					}
					if _, ok := r.driverOf("n1").Endpoints()[ep.ID]; !ok {
						t.Errorf("the driver does not hold committed endpoint %.12s", ep.ID)
					}
					if err := r.e.Disconnect(r.ctx, "n1", "alpha", false); err != nil {
						t.Fatal(err)
					}
					if err := r.e.RemoveNetwork(r.ctx, "n1"); err != nil {
						t.Fatal("remove the network after the detach:", err)
					}
					return
				}
				after := r.getSandbox("alpha")
				if !sameJSON(t, after.Endpoints, before.Endpoints) {
					t.Errorf("endpoints %+v after a failed attach, want %+v", after.Endpoints, before.Endpoints)
				}
				if rec, _ := r.stored(before.ID); rec == nil || !sameJSON(t, rec.Endpoints, before.Endpoints) {
					t.Errorf("stored record %+v, want endpoints %+v", rec, before.Endpoints)
				}
				r.checkNothingLeft(t, "alpha", f.committed)
				// The address is free: the same one can be had again.
				spec := AttachSpec{IP: r.firstAddr()}
				if global {
					spec = AttachSpec{} // lowest free first
				}
				if err := r.e.Connect(r.ctx, "n1", "alpha", spec); err != nil {
					t.Fatal("attach after the rollback:", err)
				}
				if ep := endpointOn(r.getSandbox("alpha"), r.ns("n1").rec.ID); ep.Address.Addr().String() != r.firstAddr() {
					t.Errorf("attach after the rollback got %s, want %s", ep.Address, r.firstAddr())
				}
				if err := r.e.Disconnect(r.ctx, "n1", "alpha", false); err != nil {
					t.Fatal(err)
				}
				if err := r.e.RemoveNetwork(r.ctx, "n1"); err != nil {
					t.Fatal("remove the network after the rollback:", err)
				}
			})
		}
	}
}

func TestAttachRollbackCreateSandbox(t *testing.T) {
	for _, global := range []bool{false, true} {
		for _, f := range attachFailures() {
			if global && !f.global {
				continue
			}
			t.Run(scopeName(global)+"/"+f.name, func(t *testing.T) {
				r := rollbackRig(t, global)
				files := r.nsx.Files()
				ports := f.arm(r)
				_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "beta", Networks: []AttachSpec{{Network: "n1", Ports: ports}}})
				disarm()
				f.check(t, err)
				_, err = r.e.Sandbox("beta")
				wantKind(t, err, KindNotFound, "sandbox of a failed create")
				if got := r.storedNames(); !slices.Equal(got, []string{"alpha"}) {
					t.Errorf("sandboxes in the store %v, want [alpha]", got)
				}
				if got := r.nsx.Files(); !slices.Equal(got, files) {
					t.Errorf("namespace files %v, want %v", got, files)
				}
				if f.committed {
					waitQuarantine(t, r.e) // the recorded endpoint's address is held until its link goes
				}
				r.checkNothingLeft(t, "beta", f.committed)
				r.checkNSDir(t)
				sb, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "beta", Networks: []AttachSpec{{Network: "n1", IP: r.firstAddr()}}})
				if err != nil {
					t.Fatal("create after the rollback:", err)
				}
				if err := r.e.RemoveSandbox(r.ctx, sb.ID, false); err != nil {
					t.Fatal(err)
				}
				if err := r.e.RemoveNetwork(r.ctx, "n1"); err != nil {
					t.Fatal("remove the network after the rollback:", err)
				}
			})
		}
	}
}

// A sandbox whose creation fails after its namespace was made leaves no
// namespace and no record.
func TestCreateSandboxRollbackNamespace(t *testing.T) {
	r := newRig(t)
	files := r.nsx.Files()
	arm(t, "sandbox.create.after-netns")
	_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "beta"})
	disarm()
	if !errors.Is(err, errInjected) {
		t.Fatalf("create: %v, want the injected fault", err)
	}
	if got := r.nsx.Files(); !slices.Equal(got, files) {
		t.Errorf("namespace files %v, want %v", got, files)
	}
	r.checkNSDir(t)
	if got := r.storedNames(); len(got) != 0 {
		t.Errorf("sandboxes in the store: %v", got)
	}
	if len(r.e.Sandboxes()) != 0 {
		t.Errorf("sandboxes: %v", r.e.Sandboxes())
	}
}

func (f attachFailure) check(t *testing.T, err error) {
	t.Helper()
	if f.point != "" {
		if !errors.Is(err, errInjected) {
			t.Fatalf("attach: %v, want the injected fault", err)
		}
		return
	}
	wantKind(t, err, f.kind, "attach")
}

func scopeName(global bool) string {
	if global {
		return "global"
	}
	return "local"
}

// firstAddr is the first address n1 hands out.
func (r *rig) firstAddr() string {
	if r.cl != nil {
		return "10.20.0.2"
	}
	return "10.10.0.2"
}

// driverOf is the fake driver of a network.
func (r *rig) driverOf(netName string) *drivertest.Fake {
	r.t.Helper()
	return r.drv[r.ns(netName).rec.Driver]
}

// checkNothingLeft checks that no attach of sandbox sbName to n1 is left
// anywhere: driver, pending count, address, sticky address, ports, and
// for a global network the cluster store. A sticky address is allowed
// when the attach got as far as its commit.
func (r *rig) checkNothingLeft(t *testing.T, sbName string, stickyOK bool) {
	t.Helper()
	n1 := r.ns("n1").rec
	for id, j := range r.driverOf("n1").Endpoints() {
		if j.Network == n1.ID {
			t.Errorf("the driver keeps endpoint %s on n1", id)
		}
	}
	if p := r.pending("n1"); p != 0 {
		t.Errorf("n1 has %d attaches pending", p)
	}
	r.e.mu.Lock()
	held := len(r.e.held)
	r.e.mu.Unlock()
	if held != 0 {
		t.Errorf("%d endpoints hold host ports", held)
	}
	if ps := r.fw.portList(); len(ps) != 0 {
		t.Errorf("firewall publishes %v", ps)
	}
	for _, p := range r.fw.everAdded() {
		r.checkPortFree(t, p.Proto, p.HostIP, p.HostPort)
	}
	if r.cl == nil {
		if r.inUse("n1", r.firstAddr()) {
			t.Errorf("%s still taken", r.firstAddr())
		}
		if s := r.sticky("n1", sbName); s != "" && !stickyOK {
			t.Errorf("sticky address %s recorded for %q", s, sbName)
		}
		return
	}
	eps, err := r.cl.Endpoints(r.ctx, n1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 0 {
		t.Errorf("cluster store keeps endpoints %+v", eps)
	}
	if claims := r.addressClaims(n1.ID); len(claims) != 0 {
		t.Errorf("cluster store keeps address claims %v", claims)
	}
	g := r.e.global
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.attaching) != 0 || len(g.withdraw) != 0 {
		t.Errorf("attaching %v, withdrawals pending %v", g.attaching, g.withdraw)
	}
}

// checkPortFree binds a port the engine held: it must be free again.
func (r *rig) checkPortFree(t *testing.T, proto string, ip netip.Addr, port uint16) {
	t.Helper()
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
	var err error
	if proto == "udp" {
		var c net.PacketConn
		if c, err = net.ListenPacket("udp4", addr); err == nil {
			c.Close()
		}
	} else {
		var l net.Listener
		if l, err = net.Listen("tcp4", addr); err == nil {
			l.Close()
		}
	}
	if err != nil {
		t.Errorf("port %s/%s still held: %v", addr, proto, err)
	}
}

// checkNSDir: the namespace directory holds exactly the fake's files there.
func (r *rig) checkNSDir(t *testing.T) {
	t.Helper()
	des, err := os.ReadDir(r.e.nsDir)
	if err != nil {
		t.Fatal(err)
	}
	var onDisk []string
	for _, de := range des {
		onDisk = append(onDisk, r.e.nsDir+"/"+de.Name())
	}
	var want []string
	for _, f := range r.nsx.Files() {
		if len(f) > len(r.e.nsDir) && f[:len(r.e.nsDir)+1] == r.e.nsDir+"/" {
			want = append(want, f)
		}
	}
	if !slices.Equal(onDisk, want) {
		t.Errorf("namespace directory holds %v, want %v", onDisk, want)
	}
}

func (r *rig) storedNames() []string {
	r.t.Helper()
	kvs, err := r.st.List(r.ctx, keySandboxes)
	if err != nil {
		r.t.Fatal(err)
	}
	var names []string
	for _, kv := range kvs {
		sb, _ := r.stored(kv.Key[len(keySandboxes):])
		names = append(names, sb.Name)
	}
	slices.Sort(names)
	return names
}

// addressClaims lists the endpoints' address claims of a global network
// in the cluster store (not the gateway's); the key layout is
// docs/overlay.md's.
func (r *rig) addressClaims(netID string) map[string]cluster.Claim {
	r.t.Helper()
	kvs, err := r.cst.List(r.ctx, "tether/v1/global/addrs/"+netID+"/")
	if err != nil {
		r.t.Fatal(err)
	}
	out := map[string]cluster.Claim{}
	for _, kv := range kvs {
		var c cluster.Claim
		if err := json.Unmarshal(kv.Value, &c); err != nil {
			r.t.Fatalf("claim %s: %v", kv.Key, err)
		}
		if !c.Gateway {
			out[kv.Key] = c
		}
	}
	return out
}

// waitQuarantine waits until no removed endpoint's address is held.
func waitQuarantine(t *testing.T, e *Engine) {
	t.Helper()
	for i := 0; i < 500; i++ {
		e.quarantine.mu.Lock()
		n := len(e.quarantine.byAddr)
		e.quarantine.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("addresses still held after 5 s")
}
