package e2e

// Tether's CNI plugin on IPv6 networks (issue 17), driven by cnitool: a
// dual-stack attachment (allocated, and static through the ips capability)
// and an IPv6-only one. The ADD result has one IP per family on the
// container interface with its gateway ("version" before 1.0.0) and a
// default route per family; the kernel agrees; the test-made container
// namespace reaches a `tether run` sandbox on the same network over IPv6
// and back, names resolve to AAAA records; CHECK passes; DEL removes it.
//
//	TETHER_E2E=1 go test ./e2e -run CNIIPv6 -count=1 -v

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/tether-net/tether/internal/testutil"
)

// cniFamily is what an ADD result says of one address family on the
// container interface.
type cniFamily struct {
	Addr  netip.Prefix
	GW    netip.Addr
	Route bool // a default route of the family via GW
}

// checkResultFamilies checks an ADD result printed for cniVersion v: the
// container interface ifname in sandbox, exactly the IPs of the families
// in want (IPv4 first), each inside its subnet with its gateway and
// interface index, "version" "4"/"6" before 1.0.0 and none from 1.0.0,
// and a default route of each family (0.0.0.0/0, ::/0) via its gateway.
// It returns the families found, keyed 4 and 6, and the interface's MAC.
func checkResultFamilies(t *testing.T, v string, raw []byte, ifname, sandbox string, want map[int]netip.Prefix) (map[int]cniFamily, string) {
	t.Helper()
	var r struct {
		CNIVersion string `json:"cniVersion"`
		Interfaces []struct {
			Name    string `json:"name"`
			Mac     string `json:"mac"`
			Sandbox string `json:"sandbox"`
		} `json:"interfaces"`
		IPs []struct {
			Version   *string `json:"version"`
			Interface *int    `json:"interface"`
			Address   string  `json:"address"`
			Gateway   string  `json:"gateway"`
		} `json:"ips"`
		Routes []struct {
			Dst string `json:"dst"`
			GW  string `json:"gw"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("%s result: %v\n%s", v, err, raw)
	}
	if r.CNIVersion != v {
		t.Errorf("result cniVersion %q, want %q", r.CNIVersion, v)
	}
	ctr := slices.IndexFunc(r.Interfaces, func(i struct {
		Name    string `json:"name"`
		Mac     string `json:"mac"`
		Sandbox string `json:"sandbox"`
	}) bool {
		return i.Name == ifname && i.Sandbox == sandbox
	})
	if ctr < 0 {
		t.Fatalf("%s result: no interface %s in %s: %s", v, ifname, sandbox, raw)
	}
	got := map[int]cniFamily{}
	var order []int
	for i, ip := range r.IPs {
		p, err := netip.ParsePrefix(ip.Address)
		if err != nil {
			t.Errorf("%s result: ips[%d].address %q: %v", v, i, ip.Address, err)
			continue
		}
		fam, verWant := 4, "4"
		if p.Addr().Is6() {
			fam, verWant = 6, "6"
		}
		if _, dup := got[fam]; dup {
			t.Errorf("%s result: two IPv%d addresses: %s", v, fam, raw)
		}
		gw, err := netip.ParseAddr(ip.Gateway)
		if err != nil || gw.Is6() != p.Addr().Is6() {
			t.Errorf("%s result: ips[%d].gateway %q: not an IPv%d address", v, i, ip.Gateway, fam)
		}
		if ip.Interface == nil || *ip.Interface != ctr {
			t.Errorf("%s result: ips[%d].interface %v, want %d (the container interface)", v, i, ip.Interface, ctr)
		}
		switch before1 := v < "1.0.0"; {
		case before1 && (ip.Version == nil || *ip.Version != verWant):
			t.Errorf("%s result: ips[%d] (%s) version %v, want %q: %s", v, i, p, ip.Version, verWant, raw)
		case !before1 && ip.Version != nil:
			t.Errorf("%s result: ips[%d] has \"version\", which 1.0.0 removed: %s", v, i, raw)
		}
		dst := map[int]string{4: "0.0.0.0/0", 6: "::/0"}[fam]
		route := slices.ContainsFunc(r.Routes, func(rt struct {
			Dst string `json:"dst"`
			GW  string `json:"gw"`
		}) bool {
			return rt.Dst == dst && rt.GW == gw.String()
		})
		got[fam] = cniFamily{Addr: p, GW: gw, Route: route}
		order = append(order, fam)
	}
	for fam, subnet := range want {
		f, ok := got[fam]
		switch {
		case !ok:
			t.Errorf("%s result has no IPv%d address: %s", v, fam, raw)
		case !subnet.Contains(f.Addr.Addr()) || f.Addr.Bits() != subnet.Bits():
			t.Errorf("%s result: IPv%d address %s, want one in %s", v, fam, f.Addr, subnet)
		case !f.Route:
			t.Errorf("%s result: no IPv%d default route via %s: %s", v, fam, f.GW, raw)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s result: families %v, want %d: %s", v, order, len(want), raw)
	}
	if len(order) == 2 && order[0] != 4 {
		t.Errorf("%s result: IPv6 before IPv4: %s", v, raw)
	}
	return got, r.Interfaces[ctr].Mac
}

// expectKernel6 checks that namespace ns has the IPv6 address on ifname
// (not tentative: no DAD), takes no router advertisements there, and has
// the IPv6 default route via gw.
func expectKernel6(t *testing.T, ns, ifname string, f cniFamily) {
	t.Helper()
	if out, err := testutil.InNS(ns, "sysctl", "-n", "net.ipv6.conf."+ifname+".accept_ra"); err != nil || strings.TrimSpace(out) != "0" {
		t.Errorf("%s %s: accept_ra %q (%v), want 0: router advertisements ignored", ns, ifname, strings.TrimSpace(out), err)
	}
	addrs := testutil.Must(t, "ip", "-n", ns, "-6", "-o", "addr", "show", "dev", ifname)
	if !strings.Contains(addrs, " "+f.Addr.String()+" ") || strings.Contains(addrs, "tentative") {
		t.Errorf("%s %s IPv6 addresses, want %s (not tentative):\n%s", ns, ifname, f.Addr, addrs)
	}
	route := testutil.Must(t, "ip", "-n", ns, "-6", "route", "show", "default")
	if want := "default via " + f.GW.String() + " dev " + ifname; !strings.Contains(route, want) {
		t.Errorf("%s IPv6 default route %q, want %q", ns, route, want)
	}
}

// ping6NS sends one ICMPv6 echo from namespace ns to an address.
func ping6NS(ns, target string) error {
	if out, err := testutil.InNS(ns, "ping", "-6", "-n", "-c1", "-W2", target); err != nil {
		return fmt.Errorf("ping -6 %s from %s: %v %s", target, ns, err, strings.TrimSpace(out))
	}
	return nil
}

// aaaaRecords are the AAAA answers of r.
func aaaaRecords(r *mdns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*mdns.AAAA); ok {
			out = append(out, a.AAAA.String())
		}
	}
	return out
}

// TestCNIIPv6DualStack: cnitool ADD on a dual-stack network, for a
// version with the IPs' "version" and one without, the first with both
// addresses static (ips capability), the second allocated.
func TestCNIIPv6DualStack(t *testing.T) {
	refs := requireCNIRefs(t)
	hostNS, d := host(t)
	subnet4, subnet6 := netip.MustParsePrefix("10.177.0.0/24"), netip.MustParsePrefix("fd00:177::/64")
	d.MustTether("network", "create", "--ipv6", "--subnet", subnet4.String(), "--subnet", subnet6.String(), "cds")
	runDetached(t, d, "web6", "--network", "cds", "--", "sleep", "600")
	web4, web6 := ip(t, d, "web6", "cds"), ip6(t, d, "web6", "cds")
	k := newCNIKit(t, d, hostNS, refs)

	for _, tc := range []struct {
		v      string
		static []string // the ips capability; nil: allocate
	}{
		{v: "1.1.0", static: []string{"10.177.0.50/24", "fd00:177::50/64"}},
		{v: "0.4.0"},
	} {
		t.Run(tc.v, func(t *testing.T) {
			tag := strings.ReplaceAll(tc.v, ".", "")
			name := "cds-" + tag
			k.conflist(t, name, tc.v, k.tether("cds"))
			ns := ctrNS(t, "tth-c6")
			nsPath := "/run/netns/" + ns
			pod := "pod6-" + tag
			args := "IgnoreUnknown=1;K8S_POD_NAME=" + pod
			var caps map[string]any
			if tc.static != nil {
				caps = map[string]any{"ips": tc.static}
			}

			out := k.mustCnitool(t, "add", name, nsPath, args, caps)
			t.Logf("ADD result (%s): %s", tc.v, out)
			fams, mac := checkResultFamilies(t, tc.v, []byte(out), "eth0", nsPath, map[int]netip.Prefix{4: subnet4, 6: subnet6})
			a4, a6 := fams[4], fams[6]
			if a4.GW.String() != "10.177.0.1" || a6.GW.String() != "fd00:177::1" {
				t.Errorf("gateways %s %s, want 10.177.0.1 fd00:177::1", a4.GW, a6.GW)
			}
			if tc.static != nil && (a4.Addr.String() != tc.static[0] || a6.Addr.String() != tc.static[1]) {
				t.Errorf("addresses %s %s, want the static %v (ips capability)", a4.Addr, a6.Addr, tc.static)
			}
			if atts := cniAttachments(t, d); len(atts) != 1 || atts[0].Address6 != a6.Addr.String() || atts[0].Gateway6 != a6.GW.String() {
				t.Errorf("daemon's attachments %+v, want one with Address6 %s Gateway6 %s", atts, a6.Addr, a6.GW)
			}
			expectKernel(t, ns, "eth0", cniAttach{Addr: a4.Addr, GW: a4.GW, MAC: mac})
			expectKernel6(t, ns, "eth0", a6)

			// IPv6 both ways between the CNI container and the sandbox, by
			// address and (from the sandbox) by name; IPv4 still works
			if err := ping6NS(ns, web6); err != nil {
				t.Error(err)
			}
			if err := pingNS(ns, web4); err != nil {
				t.Error(err)
			}
			if !ping6(d, "web6", a6.Addr.Addr().String()) {
				t.Errorf("sandbox web6 cannot reach %s over IPv6", a6.Addr.Addr())
			}
			if got := families(t, d, "web6", pod); len(got) != 2 || got[0] != a4.Addr.Addr() || got[1] != a6.Addr.Addr() {
				t.Errorf("web6 resolves %s to %v, want [%s %s]", pod, got, a4.Addr.Addr(), a6.Addr.Addr())
			}
			if got := aaaaRecords(query(t, nsPath, "web6", mdns.TypeAAAA, "udp")); !slices.Equal(got, []string{web6}) {
				t.Errorf("%s resolves web6 AAAA to %v, want [%s]", ns, got, web6)
			}

			k.mustCnitool(t, "check", name, nsPath, args, caps)

			k.mustCnitool(t, "del", name, nsPath, args, caps)
			if ids := attachedIDs(t, d); len(ids) != 0 {
				t.Errorf("attachments after DEL: %v", ids)
			}
			if out, err := testutil.InNS(ns, "ip", "link", "show", "eth0"); err == nil {
				t.Errorf("eth0 still in %s after DEL: %s", ns, out)
			}
			if ping6(d, "web6", a6.Addr.Addr().String()) {
				t.Errorf("sandbox web6 still reaches %s after DEL", a6.Addr.Addr())
			}
			k.mustCnitool(t, "del", name, nsPath, args, caps) // DEL again: nothing there, success
		})
	}
	// the static addresses are free again: a sandbox can take them
	runDetached(t, d, "reuse", "--network", "cds", "--ip", "10.177.0.50", "--ip6", "fd00:177::50", "--", "sleep", "600")
	if got := ip6(t, d, "reuse", "cds"); got != "fd00:177::50" {
		t.Errorf("reuse has %s, want fd00:177::50 (released by DEL)", got)
	}
}

// TestCNIIPv6Only: cnitool ADD on an IPv6-only network: one IPv6 address
// and the ::/0 route, no IPv4 in the result or the kernel; traffic with a
// sandbox over IPv6; CHECK; DEL.
func TestCNIIPv6Only(t *testing.T) {
	refs := requireCNIRefs(t)
	hostNS, d := host(t)
	subnet6 := netip.MustParsePrefix("fd00:178::/64")
	d.MustTether("network", "create", "--ipv6", "--ipv4=false", "--subnet", subnet6.String(), "c6only")
	runDetached(t, d, "only", "--network", "c6only", "--", "sleep", "600")
	only6 := ip6(t, d, "only", "c6only")
	k := newCNIKit(t, d, hostNS, refs)
	k.conflist(t, "c6only-conf", "1.0.0", k.tether("c6only"))
	ns := ctrNS(t, "tth-c6o")
	nsPath := "/run/netns/" + ns
	args := "IgnoreUnknown=1;K8S_POD_NAME=pod-only6"

	// an IPv4 address asked of an IPv6-only network is refused, and
	// nothing is left behind
	if out, errOut, err := k.cnitool("add", "c6only-conf", nsPath, args, map[string]any{"ips": []string{"10.178.0.5"}}); err == nil {
		t.Errorf("ADD with a static IPv4 address on an IPv6-only network succeeded: %s", out)
	} else {
		t.Logf("static IPv4 on an IPv6-only network refused: %v %s %s", err, firstLine(out), firstLine(errOut))
	}
	if ids := attachedIDs(t, d); len(ids) != 0 {
		t.Fatalf("attachments after a refused ADD: %v", ids)
	}

	out := k.mustCnitool(t, "add", "c6only-conf", nsPath, args, nil)
	t.Logf("ADD result: %s", out)
	fams, _ := checkResultFamilies(t, "1.0.0", []byte(out), "eth0", nsPath, map[int]netip.Prefix{6: subnet6})
	a6 := fams[6]
	expectKernel6(t, ns, "eth0", a6)
	if v4 := testutil.Must(t, "ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"); strings.TrimSpace(v4) != "" {
		t.Errorf("eth0 in %s has IPv4 addresses on an IPv6-only network:\n%s", ns, v4)
	}
	if err := ping6NS(ns, only6); err != nil {
		t.Error(err)
	}
	if !ping6(d, "only", "pod-only6") {
		t.Errorf("sandbox only cannot reach pod-only6 by name over IPv6")
	}
	k.mustCnitool(t, "check", "c6only-conf", nsPath, args, nil)
	k.mustCnitool(t, "del", "c6only-conf", nsPath, args, nil)
	if ids := attachedIDs(t, d); len(ids) != 0 {
		t.Errorf("attachments after DEL: %v", ids)
	}
}
