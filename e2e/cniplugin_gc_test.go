package e2e

// GC after a simulated reboot: containers' namespaces gone, the daemon
// restarted, the runtime's libcni cache lost (a fresh cache dir), so only
// the plugin's GC with cni.dev/valid-attachments can free what Tether
// still holds. Then DEL of an attachment the daemon no longer has, and
// STATUS and DEL while the daemon is down.

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	"github.com/moby/moby/api/types/network"

	"github.com/tether-net/tether/internal/testutil"
)

// endpointsOn is the set of sandbox names `tether network inspect` shows
// on network name.
func endpointsOn(t *testing.T, d *testutil.Daemon, name string) []string {
	t.Helper()
	var n network.Inspect
	d.InspectJSON(&n, "network", "inspect", name)
	var out []string
	for _, ep := range n.Containers {
		out = append(out, ep.Name)
	}
	slices.Sort(out)
	return out
}

// TestCNIGCAfterReboot: on a /29 (five addresses for containers) four
// containers are attached; two lose their namespaces and the daemon
// restarts (it forgets those two at its start, docs/cni.md); GC listing
// only the third (the fourth, whose namespace lives, is stale: its runtime
// forgot it) frees the others' addresses (four more ADDs fit), and GC with
// an empty list frees everything.
func TestCNIGCAfterReboot(t *testing.T) {
	refs := requireCNIRefs(t)
	hostNS, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.133.0.0/29", "gcnet")
	k := newCNIKit(t, d, hostNS, refs)
	list := k.conflist(t, "gc", "1.1.0", k.tether("gcnet"))
	l := k.libcni("boot1")

	attach := func(l *lib, i int) (*libcni.RuntimeConf, netip.Addr) {
		t.Helper()
		ns := ctrNS(t, "tth-cg")
		rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("gc-%d", i), NetNS: "/run/netns/" + ns, IfName: "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", fmt.Sprintf("gc-pod-%d", i)}}}
		if _, err := l.add(list, rt); err != nil {
			t.Fatalf("ADD %s: %v\n%s\ndaemon log:\n%s", rt.ContainerID, err, l.exec.stderr.String(), tailLines(d.Log(), 30))
		}
		a := checkResultShape(t, "1.1.0", l.exec.last("tether", "ADD"), "eth0", rt.NetNS, true)
		return rt, a.Addr.Addr()
	}
	var rts []*libcni.RuntimeConf
	var addrs []netip.Addr
	for i := range 4 {
		rt, a := attach(l, i)
		rts, addrs = append(rts, rt), append(addrs, a)
	}

	// the reboot: two namespaces gone, the daemon restarted
	for _, rt := range rts[:2] {
		testutil.Must(t, "ip", "netns", "del", rt.NetNS[len("/run/netns/"):])
	}
	restart(t, d)
	t.Logf("after the restart: attachments %v, endpoints on gcnet %v", attachedIDs(t, d), endpointsOn(t, d, "gcnet"))

	fresh := k.libcni("boot2")
	if err := fresh.gc(list, cnitypes.GCAttachment{ContainerID: rts[2].ContainerID, IfName: "eth0"}); err != nil {
		t.Fatalf("GC keeping %s: %v\n%s\ndaemon log:\n%s", rts[2].ContainerID, err, fresh.exec.stderr.String(), tailLines(d.Log(), 30))
	}
	if ids := attachedIDs(t, d); !slices.Equal(ids, []string{rts[2].ContainerID}) {
		t.Errorf("after GC, attachments %v, want only %s", ids, rts[2].ContainerID)
	}
	if eps := endpointsOn(t, d, "gcnet"); !slices.Equal(eps, []string{"gc-pod-2"}) {
		t.Errorf("after GC, endpoints on gcnet %v, want only gc-pod-2", eps)
	}
	// the two freed addresses come back: four more containers fit
	var again []netip.Addr
	for i := 4; i < 8; i++ {
		_, a := attach(fresh, i)
		again = append(again, a)
	}
	for _, a := range []netip.Addr{addrs[0], addrs[1], addrs[3]} {
		if !slices.Contains(again, a) {
			t.Errorf("address %s of a collected container not given out again (new ones: %v)", a, again)
		}
	}

	// DEL of an attachment the daemon lost (and whose namespace is gone)
	if err := l.del(list, rts[0]); err != nil {
		t.Errorf("DEL of %s after GC collected it: %v\n%s", rts[0].ContainerID, err, l.exec.stderr.String())
	}
	// GC with an empty list: nothing of gcnet left
	if err := fresh.gc(list); err != nil {
		t.Errorf("GC with an empty valid list: %v\n%s", err, fresh.exec.stderr.String())
	}
	if ids := attachedIDs(t, d); len(ids) != 0 {
		t.Errorf("after GC with an empty list, attachments %v", ids)
	}
	if eps := endpointsOn(t, d, "gcnet"); len(eps) != 0 {
		t.Errorf("after GC with an empty list, endpoints on gcnet %v", eps)
	}

	// the daemon down: STATUS says 50, DEL still succeeds
	rt8, _ := attach(fresh, 8)
	d.Stop()
	err := fresh.status(list)
	if cniCode(err) != 50 {
		t.Errorf("STATUS with the daemon down: %v (code %d), want code 50", err, cniCode(err))
	} else {
		t.Logf("STATUS with the daemon down: %v", err)
	}
	if err := fresh.del(list, rt8); err != nil {
		t.Errorf("DEL with the daemon down: %v", err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
}
