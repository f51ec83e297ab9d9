package e2e

// Tether first in a CNI chain, Debian's reference plugins after it
// (containernetworking-plugins 1.1.1, which speaks up to cniVersion
// 1.0.0): tuning (a sysctl, or the MAC), bandwidth (tbf on the host end,
// an ifb for egress) and firewall (iptables backend). libcni runs the chain
// on a thread inside the test host namespace, so bandwidth's ifb and
// firewall's chains are made there; the default namespace is only read, to
// check that none of it reached it.

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/tether-net/tether/internal/testutil"
)

// chainVersion is the newest cniVersion Debian's plugins answer.
const chainVersion = "1.0.0"

// defaultNSTrace is what a reference plugin run in the wrong namespace
// would leave in the default one: iptables lines naming CNI chains and
// bandwidth's ifb links (bwp...). Read only.
func defaultNSTrace(t *testing.T) []string {
	t.Helper()
	var trace []string
	out, err := exec.Command("iptables-save").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save (default namespace, read only): %v %s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "CNI-") {
			trace = append(trace, l)
		}
	}
	for name := range linkNames(t, "") {
		if strings.HasPrefix(name, "bwp") {
			trace = append(trace, "link "+name)
		}
	}
	return trace
}

// linkNames lists the links of namespace ns ("" = the default one, read only).
func linkNames(t *testing.T, ns string) map[string]bool {
	t.Helper()
	args := []string{"-j", "link", "show"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	m, err := linkIndexes(testutil.Must(t, "ip", args...))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for n := range m {
		out[n] = true
	}
	return out
}

// inHostNS runs a command in the test host namespace and returns its output.
func inHostNS(t *testing.T, ns string, name string, args ...string) string {
	t.Helper()
	return testutil.Must(t, "nsenter", append([]string{"--net=/run/netns/" + ns, "--", name}, args...)...)
}

// TestCNIChain runs ADD, CHECK and DEL of tether + tuning + bandwidth +
// firewall, and of tether + tuning setting the MAC: every plugin sees
// Tether's result as prevResult and passes it on, their kernel effects
// appear in the test namespaces and go with DEL, traffic still flows.
func TestCNIChain(t *testing.T) {
	refs := requireCNIRefs(t)
	hostNS, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.132.0.0/24", "chain")
	runDetached(t, d, "web", "--network", "chain", "--", "sleep", "3600")
	k := newCNIKit(t, d, hostNS, refs)
	before := defaultNSTrace(t)

	t.Run("tuning-bandwidth-firewall", func(t *testing.T) {
		list := k.conflist(t, "chain", chainVersion, k.tether("chain"),
			map[string]any{"type": "tuning", "sysctl": map[string]string{"net.ipv4.conf.eth0.arp_notify": "1"}},
			map[string]any{"type": "bandwidth", "ingressRate": 80000000, "ingressBurst": 1000000,
				"egressRate": 80000000, "egressBurst": 1000000},
			map[string]any{"type": "firewall", "backend": "iptables"})
		k.chainRound(t, list, func(t *testing.T, ns string, a cniAttach) {
			if got := strings.TrimSpace(inHostNS(t, ns, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify")); got != "1" {
				t.Errorf("tuning: arp_notify in %s = %q, want 1", ns, got)
			}
			if q := testutil.Must(t, "tc", "-n", hostNS, "qdisc", "show", "dev", a.Host); !strings.Contains(q, "tbf") {
				t.Errorf("bandwidth: no tbf qdisc on host end %s: %s", a.Host, q)
			}
			if ifbs := bwpLinks(t, hostNS); len(ifbs) != 1 {
				t.Errorf("bandwidth: ifb links in %s: %v, want one", hostNS, ifbs)
			}
			rules := inHostNS(t, hostNS, "iptables-save", "-t", "filter")
			if !strings.Contains(rules, "CNI-FORWARD") || !strings.Contains(rules, a.Addr.Addr().String()) {
				t.Errorf("firewall: no CNI-FORWARD rule for %s in %s:\n%s", a.Addr.Addr(), hostNS, rules)
			}
		}, func(t *testing.T, a cniAttach) {
			if ifbs := bwpLinks(t, hostNS); len(ifbs) != 0 {
				t.Errorf("bandwidth: ifb links left in %s after DEL: %v", hostNS, ifbs)
			}
			if rules := inHostNS(t, hostNS, "iptables-save", "-t", "filter"); strings.Contains(rules, a.Addr.Addr().String()+"/") {
				t.Errorf("firewall: rules for %s left in %s after DEL:\n%s", a.Addr.Addr(), hostNS, rules)
			}
		})
	})

	t.Run("tuning-mac", func(t *testing.T) {
		const mac = "c2:00:5e:00:53:01"
		list := k.conflist(t, "chainmac", chainVersion, k.tether("chain"), map[string]any{"type": "tuning", "mac": mac})
		k.chainRound(t, list, func(t *testing.T, ns string, a cniAttach) {
			if !strings.EqualFold(a.MAC, mac) {
				t.Errorf("tuning: the chain's result says mac %s, want %s", a.MAC, mac)
			}
			for _, at := range cniAttachments(t, d) {
				t.Logf("the daemon's record of %s: mac %s (tuning set %s)", at.ContainerID, at.MAC, mac)
			}
		}, nil)
	})

	if after := defaultNSTrace(t); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("the default namespace changed: before %q, after %q", before, after)
	}
}

// bwpLinks lists bandwidth's ifb links (bwp...) in namespace ns.
func bwpLinks(t *testing.T, ns string) []string {
	t.Helper()
	var out []string
	for n := range linkNames(t, ns) {
		if strings.HasPrefix(n, "bwp") {
			out = append(out, n)
		}
	}
	return out
}

// chainRound attaches one container through list: the last plugin's result
// must carry Tether's address (prevResult passed along), the kernel must
// match it (added checks what the later plugins did), the sandbox web
// reaches the container, CHECK passes; then DEL (gone checks what must be
// gone), twice.
func (k *cniKit) chainRound(t *testing.T, list *libcni.NetworkConfigList,
	added func(t *testing.T, ns string, a cniAttach), gone func(t *testing.T, a cniAttach)) {
	t.Helper()
	ns := ctrNS(t, "tth-cc")
	l := k.libcni(list.Name)
	rt := &libcni.RuntimeConf{ContainerID: "chain-" + list.Name, NetNS: "/run/netns/" + ns, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", "pod-" + list.Name}}}
	res, err := l.add(list, rt)
	if err != nil {
		t.Fatalf("ADD through %s: %v\nplugins' stderr: %s\ndaemon log:\n%s", list.Name, err, l.exec.stderr.String(), tailLines(k.d.Log(), 30))
	}
	tetherOut := checkResultShape(t, chainVersion, l.exec.last("tether", "ADD"), "eth0", rt.NetNS, true)
	final, err := res.GetAsVersion(chainVersion)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(final)
	t.Logf("%s: the chain's result: %s", list.Name, b)
	a := checkResultShape(t, chainVersion, b, "eth0", rt.NetNS, true)
	if a.Addr != tetherOut.Addr || a.GW != tetherOut.GW || a.Host != tetherOut.Host {
		t.Errorf("the chain's result %+v lost Tether's %+v", a, tetherOut)
	}
	for _, p := range list.Plugins[1:] {
		if out := l.exec.last(p.Network.Type, "ADD"); !strings.Contains(string(out), a.Addr.String()) {
			t.Errorf("%s printed no result carrying %s (prevResult not passed on): %s", p.Network.Type, a.Addr, out)
		}
	}
	expectKernel(t, ns, "eth0", a)
	if added != nil {
		added(t, ns, a)
	}
	if !ping(k.d, "web", a.Addr.Addr().String()) {
		t.Errorf("sandbox web cannot reach %s (%s)", ns, a.Addr.Addr())
	}
	if !ping(k.d, "web", "pod-"+list.Name) {
		t.Errorf("sandbox web cannot reach pod-%s by name", list.Name)
	}
	if err := l.check(list, rt); err != nil {
		t.Errorf("CHECK through %s: %v\nplugins' stderr: %s", list.Name, err, l.exec.stderr.String())
	}
	for range 2 {
		if err := l.del(list, rt); err != nil {
			t.Errorf("DEL through %s: %v\nplugins' stderr: %s", list.Name, err, l.exec.stderr.String())
		}
	}
	if ids := attachedIDs(t, k.d); len(ids) != 0 {
		t.Errorf("attachments after DEL: %v", ids)
	}
	if gone != nil {
		gone(t, a)
	}
}
