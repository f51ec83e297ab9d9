package doctor

import (
	"cmp"
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/doctor/report"
)

// withOverlay adds a global network "ov" (VNI 4097) with a local sandbox
// on it and one remote peer "far", all of it programmed.
func withOverlay(st *State, k *fakeKernel) {
	st.Networks = append(st.Networks, Network{ID: "n3", Name: "ov", Driver: "overlay", Subnet: netip.MustParsePrefix("10.40.0.0/24"),
		Global: true, VNI: 4097, VTEP: netip.MustParseAddr("192.0.2.1"), ICC: true})
	st.Sandboxes[0].Endpoints = append(st.Sandboxes[0].Endpoints, Endpoint{NetworkID: "n3", HostIf: "vto-web", Address: netip.MustParsePrefix("10.40.0.2/24")})
	st.Cluster = &Cluster{Self: "h1", Registered: true, TTL: 10 * time.Second, Peers: []Peer{
		{NetworkID: "n3", Sandbox: "far", Node: "h2", IP: netip.MustParseAddr("10.40.0.5"), MAC: "02:42:0a:28:00:05", VTEP: netip.MustParseAddr("192.0.2.2")}}}
	k.links = append(k.links,
		Link{Name: "tov-4097", Index: 30, MTU: 1450, Up: true, Kind: "bridge"},
		Link{Name: "tvx-4097", Index: 31, MTU: 1450, Up: true, Kind: "vxlan", MasterIndex: 30, ParentIndex: 2, Ingress: []string{"tether_fp"}},
		Link{Name: "vto-web", Index: 32, MTU: 1450, Up: true, Kind: "veth", MasterIndex: 30})
	for i := range k.links {
		if k.links[i].Index == 2 { // the underlay: the tunnel's decapsulation
			k.links[i].Ingress = []string{"tether_fp_vx"}
		}
	}
	k.tables["ip tether_vxlan"] = &Table{Family: "ip", Name: "tether_vxlan", Sets: map[string][]string{"nodes": {"192.0.2.1", "192.0.2.2"}}}
	k.fdb = map[string][]FDB{"tvx-4097": {{MAC: "02:42:0a:28:00:05", Dst: netip.MustParseAddr("192.0.2.2")}}}
	k.neigh = map[string][]Neigh{"tvx-4097": {{IP: netip.MustParseAddr("10.40.0.5"), MAC: "02:42:0a:28:00:05"}}}
}

func policyDrop(fam, table, name string, rules ...Rule) Chain {
	return Chain{Family: fam, Table: table, Name: name, Hook: "forward", Type: "filter", Policy: "drop", Rules: rules}
}

func TestHost(t *testing.T) {
	tests := []struct {
		name   string
		change func(st *State, k *fakeKernel)
		check  string // the check that must report ("" none)
		sev    report.Severity
		want   []string // substrings of What+Why+Fix+Subject
		reject []string // substrings that must not appear
	}{
		{name: "healthy", change: func(*State, *fakeKernel) {}},
		{name: "healthy overlay", change: withOverlay},
		{name: "ip_forward off", change: func(_ *State, k *fakeKernel) { k.sysctls["net/ipv4/ip_forward"] = "0" },
			check: CheckIPForward, sev: report.Error, want: []string{"sysctl -w net.ipv4.ip_forward=1", "\"ip-forward\": true", "app"}, reject: []string{"back"}},
		{name: "ip_forward off, only internal networks", change: func(st *State, k *fakeKernel) {
			k.sysctls["net/ipv4/ip_forward"] = "0"
			st.Networks = st.Networks[1:]
			k.tables["ip tether"].Sets["bridges"] = []string{"tth-back"}
		}},
		{name: "ipv6 forwarding off", change: func(st *State, k *fakeKernel) {
			st.Networks[0].Subnet6 = netip.MustParsePrefix("fd00:20::/64")
			k.sysctls["net/ipv6/conf/all/forwarding"] = "0"
		}, check: CheckIPForward, sev: report.Error, want: []string{"net.ipv6.conf.all.forwarding=1"}},
		{name: "br_netfilter on", change: func(_ *State, k *fakeKernel) {
			k.sysctls["net/bridge/bridge-nf-call-iptables"] = "1"
			k.sysctls["net/bridge/bridge-nf-call-ip6tables"] = "1"
		}, check: CheckBrNetfilter, sev: report.Info, want: []string{"bridge-nf-call-iptables=1", "same network"}},
		{name: "br_netfilter loaded, calls off", change: func(_ *State, k *fakeKernel) {
			k.sysctls["net/bridge/bridge-nf-call-iptables"] = "0"
			k.sysctls["net/bridge/bridge-nf-call-ip6tables"] = "0"
		}},
		{name: "ip_forward unreadable", change: func(_ *State, k *fakeKernel) { delete(k.sysctls, "net/ipv4/ip_forward") }},
		{name: "inet filter policy drop", change: func(_ *State, k *fakeKernel) {
			k.chains = append(k.chains, policyDrop("inet", "filter", "forward"))
		}, check: CheckForward, sev: report.Error,
			want:   []string{"table inet filter chain forward", "policy drop", "app (tth-app)", `nft insert rule inet filter forward iifname "tth-app" accept`, "forward-accept-other-tables"},
			reject: []string{"tth-back"}},
		{name: "policy drop with accept rules for the bridge", change: func(_ *State, k *fakeKernel) {
			k.chains = append(k.chains, policyDrop("inet", "filter", "forward",
				Rule{IIF: "tth-app", Verdict: "accept", Comment: "tether: from tth-app"},
				Rule{OIF: "tth-app", CtState: true, Verdict: "accept"}))
		}},
		{name: "iptables-nft FORWARD policy drop", change: func(_ *State, k *fakeKernel) {
			k.chains = append(k.chains, policyDrop("ip", "filter", "FORWARD", Rule{IIF: "docker0", Verdict: "accept"}))
		}, check: CheckForward, sev: report.Error, want: []string{"table ip filter chain FORWARD", "iptables -I FORWARD -i tth-app -j ACCEPT"}},
		{name: "iptables wildcard accept", change: func(_ *State, k *fakeKernel) {
			k.chains = append(k.chains, policyDrop("ip", "filter", "FORWARD", Rule{IIF: "tth-*", Verdict: "accept"}))
		}},
		{name: "explicit drop rule", change: func(_ *State, k *fakeKernel) {
			k.chains = append(k.chains, Chain{Family: "inet", Table: "fw", Name: "fwd", Hook: "forward", Type: "filter", Policy: "accept",
				Rules: []Rule{{Handle: 7, Src: netip.MustParsePrefix("10.20.0.0/16"), Verdict: "drop"}}})
		}, check: CheckForward, sev: report.Error, want: []string{"rule handle 7", "saddr 10.20.0.0/16", "nft delete rule inet fw fwd handle 7"}},
		{name: "inet rule dropping IPv6 only", change: func(_ *State, k *fakeKernel) {
			k.chains = append(k.chains, Chain{Family: "inet", Table: "fw", Name: "fwd", Hook: "forward", Type: "filter", Policy: "accept",
				Rules: []Rule{{Handle: 7, NFProto: "ipv6", Verdict: "drop"}}})
		}},
		{name: "inet rule dropping IPv4 only", change: func(_ *State, k *fakeKernel) {
			k.chains = append(k.chains, Chain{Family: "inet", Table: "fw", Name: "fwd", Hook: "forward", Type: "filter", Policy: "accept",
				Rules: []Rule{{Handle: 7, NFProto: "ipv4", Verdict: "drop"}}})
		}, check: CheckForward, sev: report.Error, want: []string{"rule handle 7"}},
		{name: "drop rule the doctor cannot read", change: func(_ *State, k *fakeKernel) {
			k.chains = append(k.chains, Chain{Family: "inet", Table: "fw", Name: "fwd", Hook: "forward", Type: "filter", Policy: "accept",
				Rules: []Rule{{Handle: 7, Other: true, Verdict: "drop"}}})
		}},
		{name: "last rule drops all", change: func(_ *State, k *fakeKernel) {
			k.chains = append(k.chains, Chain{Family: "inet", Table: "firewalld", Name: "filter_FORWARD", Hook: "forward", Type: "filter", Policy: "accept",
				Rules: []Rule{{Handle: 3, CtState: true, Verdict: "accept"}, {Handle: 9, Verdict: "reject"}}})
		}, check: CheckForward, sev: report.Error, want: []string{"rule handle 9 (reject)", "firewalld"}},
		{name: "br_netfilter cuts a bridge apart", change: func(_ *State, k *fakeKernel) {
			k.sysctls["net/bridge/bridge-nf-call-iptables"] = "1"
			k.chains = append(k.chains, Chain{Family: "ip", Table: "x", Name: "f", Hook: "forward", Type: "filter", Policy: "accept",
				Rules: []Rule{{Handle: 4, OIF: "tth-app", Verdict: "drop"}}})
		}, check: CheckForward, sev: report.Error, want: []string{"cannot reach each other", "rule handle 4"}},
		{name: "the same rule without br_netfilter", change: func(_ *State, k *fakeKernel) {
			k.chains = append(k.chains, Chain{Family: "ip", Table: "x", Name: "f", Hook: "forward", Type: "filter", Policy: "accept",
				Rules: []Rule{{Handle: 4, OIF: "tth-app", Verdict: "drop"}}})
		}},
		{name: "bridge family forward policy drop", change: func(_ *State, k *fakeKernel) {
			k.chains = append(k.chains, policyDrop("bridge", "filter", "forward"))
		}, check: CheckForward, sev: report.Error, want: []string{"table bridge filter chain forward", "cannot reach each other", `nft insert rule bridge filter forward meta ibrname "tth-app" accept`}},
		{name: "bridge family chain dropping one port", change: func(_ *State, k *fakeKernel) {
			k.chains = append(k.chains, Chain{Family: "bridge", Table: "filter", Name: "forward", Hook: "forward", Type: "filter", Policy: "accept",
				Rules: []Rule{{IIF: "veth-web", Verdict: "drop"}}})
		}},
		{name: "table missing", change: func(_ *State, k *fakeKernel) { delete(k.tables, "ip tether") },
			check: CheckTable, sev: report.Error, want: []string{"table ip tether is missing", "restart the daemon"}},
		{name: "table flushed", change: func(_ *State, k *fakeKernel) {
			for i := range k.tables["ip tether"].Chains {
				k.tables["ip tether"].Chains[i].Rules = nil
			}
		}, check: CheckTable, sev: report.Error, want: []string{`lacks its rule "tether: no traffic between networks"`}},
		{name: "foreign rule in our table", change: func(_ *State, k *fakeKernel) {
			c := &k.tables["ip tether"].Chains[1]
			c.Rules = append(c.Rules, Rule{Handle: 99, IIF: "eth0", Verdict: "accept"})
		}, check: CheckTable, sev: report.Error, want: []string{"a rule Tether did not write (handle 99"}},
		{name: "bridge missing from set", change: func(_ *State, k *fakeKernel) {
			k.tables["ip tether"].Sets["bridges"] = []string{"tth-back"}
		}, check: CheckTable, sev: report.Error, want: []string{`set bridges lacks "tth-app"`}},
		{name: "internal bridge missing from set", change: func(_ *State, k *fakeKernel) {
			k.tables["ip tether"].Sets["internal"] = nil
		}, check: CheckTable, sev: report.Error, want: []string{`set internal lacks "tth-back"`, "the internal network is open"}},
		{name: "ip6 table missing with ip6tables", change: func(st *State, _ *fakeKernel) { st.IPv6Firewall = true },
			check: CheckTable, sev: report.Error, want: []string{"table ip6 tether is missing"}},
		{name: "iptables=false", change: func(st *State, k *fakeKernel) { st.Firewall = false; delete(k.tables, "ip tether") }},
		{name: "route inside a subnet", change: func(_ *State, k *fakeKernel) {
			k.routes = append(k.routes, Route{Dst: netip.MustParsePrefix("10.20.0.128/25"), Dev: "eth1", Via: netip.MustParseAddr("192.0.2.9"), Table: 254, Type: "unicast"})
		}, check: CheckRoutes, sev: report.Error, want: []string{"10.20.0.128/25", "network app", "ip route del 10.20.0.128/25 table 254", "2026-12-06 10:00:00Z"}},
		{name: "route inside a subnet, another table", change: func(_ *State, k *fakeKernel) {
			k.routes = append(k.routes, Route{Dst: netip.MustParsePrefix("10.30.0.0/24"), Type: "blackhole", Table: 100})
		}, check: CheckRoutes, sev: report.Error, want: []string{"blackhole", "table 100", "network back"}},
		{name: "wider route", change: func(_ *State, k *fakeKernel) {
			k.routes = append(k.routes, Route{Dst: netip.MustParsePrefix("10.0.0.0/8"), Dev: "tun0", Table: 254, Type: "unicast"})
		}, check: CheckRoutes, sev: report.Warning, want: []string{"covers 10.20.0.0/24"}},
		{name: "overlay MTU above underlay", change: func(st *State, k *fakeKernel) {
			withOverlay(st, k)
			k.links[0].MTU = 1400
		}, check: CheckMTU, sev: report.Error, want: []string{"tvx-4097", "underlay eth0 has MTU 1400", "mtu 1350"}},
		{name: "overlay MTU, underlay found by address", change: func(st *State, k *fakeKernel) {
			withOverlay(st, k)
			k.links[0].MTU = 1400
			k.links[len(k.links)-2].ParentIndex = 0
			k.addrs = map[netip.Addr]string{netip.MustParseAddr("192.0.2.1"): "eth0"}
		}, check: CheckMTU, sev: report.Error, want: []string{"underlay eth0 has MTU 1400"}},
		{name: "sandbox MTU above vxlan", change: func(st *State, k *fakeKernel) {
			withOverlay(st, k)
			k.links[len(k.links)-1].MTU = 1500
		}, check: CheckMTU, sev: report.Error, want: []string{"sandbox web", "vto-web", "mtu 1450"}},
		{name: "vxlan device missing", change: func(st *State, k *fakeKernel) {
			withOverlay(st, k)
			k.links = slices.DeleteFunc(k.links, func(l Link) bool { return l.Name == "tvx-4097" })
		}, check: CheckMTU, sev: report.Error, want: []string{"VXLAN device tvx-4097 of overlay network ov is missing"}},
		{name: "bridge bypass not attached", change: func(st *State, k *fakeKernel) {
			withOverlay(st, k)
			for i := range k.links {
				k.links[i].Ingress = nil
			}
		}, check: CheckBypass, sev: report.Info, want: []string{"bridge bypass (BPF program tether_fp) is not on tvx-4097", "TETHER_OVERLAY_BYPASS=0"}},
		{name: "tunnel in BPF not attached", change: func(st *State, k *fakeKernel) {
			withOverlay(st, k)
			for i := range k.links {
				if k.links[i].Index == 2 {
					k.links[i].Ingress = nil
				}
			}
		}, check: CheckBypass, sev: report.Info, want: []string{"(program tether_fp_vx) is not on eth0, the underlay of tvx-4097", "TETHER_OVERLAY_BYPASS=bridge"}},
		{name: "store down", change: func(st *State, k *fakeKernel) {
			withOverlay(st, k)
			st.Cluster.Reach = errors.New("context deadline exceeded")
		}, check: CheckCluster, sev: report.Error, want: []string{"does not answer", "etcdctl", "TTL 10s"}},
		{name: "lease lost", change: func(st *State, k *fakeKernel) {
			withOverlay(st, k)
			st.Cluster.Registered = false
		}, check: CheckCluster, sev: report.Error, want: []string{"(h1) is not registered"}},
		{name: "peer fdb missing", change: func(st *State, k *fakeKernel) {
			withOverlay(st, k)
			k.fdb["tvx-4097"] = nil
		}, check: CheckPeers, sev: report.Error, want: []string{"peer far (10.40.0.5) on node h2", "bridge fdb replace 02:42:0a:28:00:05 dev tvx-4097 dst 192.0.2.2 self permanent"}, reject: []string{"ip neigh replace"}},
		{name: "peer at another vtep", change: func(st *State, k *fakeKernel) {
			withOverlay(st, k)
			k.fdb["tvx-4097"][0].Dst = netip.MustParseAddr("192.0.2.77")
		}, check: CheckPeers, sev: report.Error, want: []string{"FDB entry 02:42:0a:28:00:05 dst 192.0.2.2"}},
		{name: "peer neighbour missing", change: func(st *State, k *fakeKernel) {
			withOverlay(st, k)
			k.neigh["tvx-4097"] = nil
		}, check: CheckPeers, sev: report.Error, want: []string{"ip neigh replace 10.40.0.5 lladdr 02:42:0a:28:00:05 dev tvx-4097 nud permanent"}, reject: []string{"bridge fdb"}},
		{name: "peer's node missing from the VXLAN guard", change: func(st *State, k *fakeKernel) {
			withOverlay(st, k)
			k.tables["ip tether_vxlan"].Sets["nodes"] = []string{"192.0.2.1"}
		}, check: CheckPeers, sev: report.Error, want: []string{"table ip tether_vxlan set nodes lacks 192.0.2.2, the VTEP of node h2", "nft add element ip tether_vxlan nodes { 192.0.2.2 }"}},
		{name: "no VXLAN guard (iptables=false)", change: func(st *State, k *fakeKernel) {
			withOverlay(st, k)
			st.Firewall = false
			delete(k.tables, "ip tether")
			k.tables["ip tether_vxlan"].Sets["nodes"] = nil
		}},
		{name: "no upstream answers", change: func(st *State, _ *fakeKernel) {
			st.Upstreams = []netip.AddrPort{netip.MustParseAddrPort("192.0.2.99:53")}
		}, check: CheckDNS, sev: report.Error, want: []string{"192.0.2.99:53 (no answer)", "no outside name"}},
		{name: "one upstream of two silent", change: func(st *State, _ *fakeKernel) {
			st.Upstreams = append(st.Upstreams, netip.MustParseAddrPort("192.0.2.99:53"))
		}, check: CheckDNS, sev: report.Warning, want: []string{"192.0.2.99:53"}, reject: []string{upstream.String() + " ("}},
		{name: "no upstream", change: func(st *State, _ *fakeKernel) { st.Upstreams = nil },
			check: CheckDNS, sev: report.Warning, want: []string{"no upstream server"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, k := healthyState(), healthyKernel()
			tt.change(st, k)
			rep := newTestDoctor(k).Host(context.Background(), st)
			checkReport(t, rep, tt.check, tt.sev, tt.want, tt.reject)
		})
	}
}

// checkReport: exactly the findings of check (none when ""), the worst of
// severity sev, mentioning want; Broken iff sev is an error; the check's
// status is its worst finding.
func checkReport(t *testing.T, rep *report.Report, check string, sev report.Severity, want, reject []string) {
	t.Helper()
	var text strings.Builder
	for _, f := range rep.Findings {
		if f.Check != check && f.Severity != report.Info { // notes of other checks may come along
			t.Errorf("unexpected finding %+v", f)
		}
		if f.What == "" || f.Why == "" || f.Fix == "" {
			t.Errorf("finding without what, why or fix: %+v", f)
		}
		text.WriteString(f.Subject + " | " + f.What + " | " + f.Why + " | " + f.Fix + "\n")
	}
	if check != "" && len(rep.Findings) == 0 {
		t.Fatalf("no finding, want one of check %s", check)
	}
	for _, w := range want {
		if !strings.Contains(text.String(), w) {
			t.Errorf("findings lack %q:\n%s", w, text.String())
		}
	}
	for _, r := range reject {
		if strings.Contains(text.String(), r) {
			t.Errorf("findings mention %q:\n%s", r, text.String())
		}
	}
	if rep.Broken != (sev == report.Error) {
		t.Errorf("broken %v, want %v", rep.Broken, sev == report.Error)
	}
	for _, c := range rep.Checks {
		if c.Name == check && c.Severity != sev {
			t.Errorf("check %s has status %s, want %s", c.Name, c.Severity, sev)
		}
		if c.Name != check && c.Severity != report.OK && c.Severity != report.Skipped && c.Severity != report.Info {
			t.Errorf("check %s has status %s, want ok", c.Name, c.Severity)
		}
	}
	if len(rep.Checks) != 10 {
		t.Errorf("%d checks ran, want 10: %+v", len(rep.Checks), rep.Checks)
	}
}

// A read that fails skips its check, saying why; it is never "ok".
func TestHostReadErrors(t *testing.T) {
	st, k := healthyState(), healthyKernel()
	k.err = errors.New("netlink: operation not permitted")
	rep := newTestDoctor(k).Host(context.Background(), st)
	for _, c := range rep.Checks {
		switch c.Name {
		case CheckIPForward, CheckForward, CheckTable, CheckRoutes:
			if c.Severity != report.Skipped || !strings.Contains(c.Detail, "operation not permitted") {
				t.Errorf("check %+v, want skipped naming the error", c)
			}
		}
	}
}

func TestPair(t *testing.T) {
	other := Network{ID: "n4", Name: "other", Driver: "bridge", Bridge: "tth-other", Subnet: netip.MustParsePrefix("10.50.0.0/24"), Firewalled: true, ICC: true}
	withOther := func(st *State, k *fakeKernel) {
		st.Networks = append(st.Networks, other)
		st.Sandboxes = append(st.Sandboxes, Sandbox{ID: "s4", Name: "api", Endpoints: []Endpoint{{NetworkID: "n4", HostIf: "veth-api"}}})
		k.links = append(k.links, Link{Name: "tth-other", Index: 40, Up: true}, Link{Name: "veth-api", Index: 41, Up: true, MasterIndex: 40})
		k.tables["ip tether"].Sets["bridges"] = append(k.tables["ip tether"].Sets["bridges"], "tth-other")
	}
	tests := []struct {
		name     string
		a, b     string
		change   func(st *State, k *fakeKernel)
		path     string
		breaksAt string // "" the path works
		fix      string // in the path finding's fix
	}{
		{name: "same bridge", a: "web", b: "db", path: report.PathSameBridge},
		{name: "by ID", a: "s1", b: "s2", path: report.PathSameBridge},
		{name: "icc off", a: "web", b: "db", change: func(st *State, _ *fakeKernel) { st.Networks[0].ICC = false },
			path: report.PathSameBridge, breaksAt: "bridge tth-app (icc=false)"},
		{name: "peer's interface down", a: "web", b: "db", change: func(_ *State, k *fakeKernel) { k.links[4].Up = false },
			path: report.PathSameBridge, breaksAt: "db's interface veth-db on bridge tth-app"},
		{name: "interface off the bridge", a: "web", b: "db", change: func(_ *State, k *fakeKernel) { k.links[3].MasterIndex = 0 },
			path: report.PathSameBridge, breaksAt: "web's interface veth-web on bridge tth-app"},
		{name: "br_netfilter and a dropping chain", a: "web", b: "db", change: func(_ *State, k *fakeKernel) {
			k.sysctls["net/bridge/bridge-nf-call-iptables"] = "1"
			k.chains = append(k.chains, policyDrop("inet", "filter", "forward"))
		}, path: report.PathSameBridge, breaksAt: "table inet filter chain forward"},
		{name: "bridge family chain drops bridged frames", a: "web", b: "db", change: func(_ *State, k *fakeKernel) {
			k.chains = append(k.chains, policyDrop("bridge", "filter", "forward"))
		}, path: report.PathSameBridge, breaksAt: "table bridge filter chain forward"},
		{name: "forwarding unknown", a: "web", b: "api", change: func(st *State, k *fakeKernel) {
			withOther(st, k)
			st.Firewall = false
			delete(k.sysctls, "net/ipv4/ip_forward")
		}, path: report.PathRouted},
		{name: "into an internal network", a: "web", b: "cache", path: report.PathRouted,
			breaksAt: "table ip tether chain forward: \"nothing enters an internal network\"", fix: "tether network connect back web"},
		{name: "out of an internal network", a: "cache", b: "web", path: report.PathRouted,
			breaksAt: "cache's routes", fix: "tether network connect app cache"},
		{name: "from a sandbox on an internal and an open network", a: "cache", b: "api", change: func(st *State, k *fakeKernel) {
			withOther(st, k)
			st.Sandboxes[2].Endpoints = append(st.Sandboxes[2].Endpoints, Endpoint{NetworkID: "n1", HostIf: "veth-cache2"})
			k.links = append(k.links, Link{Name: "veth-cache2", Index: 23, Up: true, MasterIndex: 10})
		}, path: report.PathRouted, breaksAt: "table ip tether chain forward: \"no traffic between networks\"", fix: "tether network connect other cache"},
		{name: "isolation", a: "web", b: "api", change: withOther, path: report.PathRouted,
			breaksAt: "table ip tether chain forward: \"no traffic between networks\"", fix: "tether network connect other web"},
		{name: "forwarding off", a: "web", b: "api", change: func(st *State, k *fakeKernel) {
			withOther(st, k)
			k.sysctls["net/ipv4/ip_forward"] = "0"
		}, path: report.PathRouted, breaksAt: "net.ipv4.ip_forward"},
		{name: "no firewall", a: "web", b: "api", change: func(st *State, k *fakeKernel) {
			withOther(st, k)
			st.Firewall = false
		}, path: report.PathRouted},
		{name: "no firewall, another table drops", a: "web", b: "api", change: func(st *State, k *fakeKernel) {
			withOther(st, k)
			st.Firewall = false
			k.chains = append(k.chains, policyDrop("ip", "filter", "FORWARD"))
		}, path: report.PathRouted, breaksAt: "table ip filter chain FORWARD", fix: "forward_chains"},
		{name: "across hosts", a: "web", b: "far", change: withOverlay, path: report.PathOverlayX},
		{name: "across hosts, fdb missing", a: "web", b: "far", change: func(st *State, k *fakeKernel) {
			withOverlay(st, k)
			k.fdb["tvx-4097"] = nil
		}, path: report.PathOverlayX, breaksAt: "VXLAN device tvx-4097: entries for far (10.40.0.5 at 192.0.2.2)"},
		{name: "across hosts, VXLAN guard drops the peer", a: "web", b: "far", change: func(st *State, k *fakeKernel) {
			withOverlay(st, k)
			k.tables["ip tether_vxlan"].Sets["nodes"] = nil
		}, path: report.PathOverlayX, breaksAt: "table ip tether_vxlan (VXLAN guard)"},
		{name: "remote peer on a network a is not on", a: "db", b: "far", change: withOverlay, path: report.PathNone, breaksAt: "networks"},
		{name: "unknown", a: "web", b: "ghost", path: report.PathNone, breaksAt: "sandbox ghost"},
	}
	byID := map[string]string{"s1": "web", "s2": "db"} // the pair is named by the sandboxes' names
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, k := healthyState(), healthyKernel()
			if tt.change != nil {
				tt.change(st, k)
			}
			rep := newTestDoctor(k).Pair(context.Background(), st, tt.a, tt.b)
			p := rep.Pair
			if p == nil || p.Path != tt.path || p.BreaksAt != tt.breaksAt || (p.Path != report.PathNone && (p.A != cmp.Or(byID[tt.a], tt.a) || p.B != cmp.Or(byID[tt.b], tt.b))) {
				t.Fatalf("pair %+v, want path %q breaking at %q", p, tt.path, tt.breaksAt)
			}
			pathFinding := slices.IndexFunc(rep.Findings, func(f report.Finding) bool { return f.Check == CheckPath })
			if (pathFinding >= 0) != (tt.breaksAt != "") || (tt.breaksAt != "" && !rep.Broken) {
				t.Fatalf("path finding at %d, broken %v; want one iff the path breaks: %+v", pathFinding, rep.Broken, rep.Findings)
			}
			if pathFinding >= 0 {
				f := rep.Findings[pathFinding]
				if !strings.Contains(f.What, tt.breaksAt) || f.Fix == "" || !strings.Contains(f.Fix, tt.fix) {
					t.Errorf("finding %+v does not name %q or its fix lacks %q", f, tt.breaksAt, tt.fix)
				}
			}
		})
	}
}
