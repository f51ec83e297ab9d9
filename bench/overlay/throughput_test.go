package overlay

// The overlay-tput scenario: one iperf3 TCP stream sandbox to sandbox over
// the overlay, divided by host to host over the underlay, interleaved in
// the same run, with the datapath's knobs turned one at a time (each
// measured against its own underlay rounds) to find what moves the ratio.
//
// The rig is two hosts (namespaces) on an underlay switch (a bridge in a
// third namespace, veths to each host), the product's overlay driver on a
// netlink handle of each host, and the daemon's firewall tables (table ip
// tether and the VXLAN guard) in each host namespace, as a daemon with a
// cluster store has them. A third path is measured for reference: a
// sandbox on a plain bridge on each host, routed host to host over the
// underlay without encapsulation (the same veth and bridge hops as the
// overlay, minus VXLAN).
//
//	sudo bench/run.sh overlay-tput   # JSON in bench/results/overlay-tput-<date>.json

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/driver"
	ovl "github.com/tether-net/tether/internal/driver/overlay"
	"github.com/tether-net/tether/internal/firewall"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/nlutil"
	"github.com/tether-net/tether/internal/testutil"
	"github.com/tether-net/tether/internal/testutil/stats"
)

const (
	tputVNI    = 4243
	tputSubnet = "10.233.0.0/24"
	ulSubnet   = "198.19.233." // underlay of this rig, .10 and .11 (RFC 2544 range)
)

// tputHost is one simulated host of the rig.
type tputHost struct {
	ns, path, addr string
	h              *netlink.Handle
	drv            *ovl.Driver
	net            *driver.Network
	sb             tputSandbox // its sandbox on the overlay
	rt             tputSandbox // its sandbox on a plain routed bridge
}

type tputSandbox struct {
	ns, path, addr, hostIf string
	ep                     *driver.Endpoint // on the overlay
}

// tputRig is the two hosts and the underlay switch.
type tputRig struct {
	tb testing.TB
	sw string
	h  [2]*tputHost
}

func mustIP(tb testing.TB, args ...string) { tb.Helper(); testutil.Must(tb, "ip", args...) }

// newTputRig builds the rig; the test's cleanup deletes every namespace.
func newTputRig(tb testing.TB) *tputRig {
	tb.Helper()
	r := &tputRig{tb: tb, sw: testutil.NetNS(tb, "t19c-ul")}
	mustIP(tb, "-n", r.sw, "link", "add", "ul0", "type", "bridge")
	mustIP(tb, "-n", r.sw, "link", "set", "ul0", "up")
	id := strings.Repeat("c19", 21) + "c"
	for i := range r.h {
		h := &tputHost{ns: testutil.NetNS(tb, "t19c-h"), addr: ulSubnet + strconv.Itoa(10+i)}
		h.path = "/run/netns/" + h.ns
		port := "ulp" + strconv.Itoa(i)
		mustIP(tb, "-n", r.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
		mustIP(tb, "-n", r.sw, "link", "set", port, "master", "ul0", "up")
		mustIP(tb, "-n", h.ns, "addr", "add", h.addr+"/24", "dev", "eth0")
		mustIP(tb, "-n", h.ns, "link", "set", "eth0", "up")
		hd, err := tns.NewHandle(h.path)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(hd.Close)
		h.h, h.drv = hd, ovl.NewAt(hd, h.path)
		tb.Cleanup(func() { _ = h.drv.Close() })
		h.net = &driver.Network{ID: id, Name: "tput", Subnet: netip.MustParsePrefix(tputSubnet), MTU: 1500,
			ICC: true, VNI: tputVNI, VTEP: netip.MustParseAddr(h.addr)}
		if err := h.drv.CreateNetwork(context.Background(), h.net); err != nil {
			tb.Fatal(err)
		}
		h.sb = r.joinOverlay(h, fmt.Sprintf("10.233.0.%d", 2+i))
		h.rt = r.routedSandbox(h, i)
		r.h[i] = h
	}
	r.mesh()
	for i, h := range r.h {
		o := r.h[1-i]
		mustIP(tb, "-n", h.ns, "route", "add", fmt.Sprintf("10.234.%d.0/24", 1-i), "via", o.addr)
		testutil.Must(tb, "ip", "netns", "exec", h.ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
		r.firewall(h)
	}
	for i, h := range r.h {
		for _, to := range []string{r.h[1-i].addr, r.h[1-i].sb.addr, r.h[1-i].rt.addr} {
			ns := map[string]string{r.h[1-i].addr: h.ns, r.h[1-i].sb.addr: h.sb.ns, r.h[1-i].rt.addr: h.rt.ns}[to]
			if out, err := testutil.InNS(ns, "ping", "-c", "1", "-W", "2", to); err != nil {
				tb.Fatalf("rig: ping %s from %s: %v\n%s", to, ns, err, out)
			}
		}
	}
	return r
}

// joinOverlay makes a sandbox on h joined to the overlay with addr.
func (r *tputRig) joinOverlay(h *tputHost, addr string) tputSandbox {
	ns := testutil.NetNS(r.tb, "t19c-sb")
	p := netip.MustParsePrefix(addr + "/24")
	ep := &driver.Endpoint{ID: strings.Repeat("e", 63) + addr[len(addr)-1:], IfName: "eth0", Address: p,
		MAC: driver.MACFromIP(p.Addr()), DisableIPv6: true}
	if err := h.drv.Join(context.Background(), h.net, ep, "/run/netns/"+ns); err != nil {
		r.tb.Fatal(err)
	}
	return tputSandbox{ns: ns, path: "/run/netns/" + ns, addr: addr, hostIf: ep.HostIfName, ep: ep}
}

// mesh programs each host's sandbox as a peer on the other host.
func (r *tputRig) mesh() {
	for i, h := range r.h {
		o := r.h[1-i]
		ip := netip.MustParseAddr(o.sb.addr)
		p := ovl.Peer{IP: ip, MAC: driver.MACFromIP(ip), VTEP: o.net.VTEP}
		if err := h.drv.AddPeer(context.Background(), h.net, p); err != nil {
			r.tb.Fatal(err)
		}
	}
}

// routedSandbox makes the reference path's sandbox: a veth to a plain
// bridge t19cbr (10.234.i.1/24) on host i, its default route via the
// bridge; hosts route each other's bridge subnet over the underlay.
func (r *tputRig) routedSandbox(h *tputHost, i int) tputSandbox {
	ns := testutil.NetNS(r.tb, "t19c-rt")
	gw, addr := fmt.Sprintf("10.234.%d.1", i), fmt.Sprintf("10.234.%d.2", i)
	for _, c := range [][]string{
		{"-n", h.ns, "link", "add", "t19cbr", "type", "bridge"},
		{"-n", h.ns, "addr", "add", gw + "/24", "dev", "t19cbr"},
		{"-n", h.ns, "link", "set", "t19cbr", "up"},
		{"-n", h.ns, "link", "add", "t19crt", "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"-n", h.ns, "link", "set", "t19crt", "master", "t19cbr", "up"},
		{"-n", ns, "addr", "add", addr + "/24", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "route", "add", "default", "via", gw},
	} {
		mustIP(r.tb, c...)
	}
	return tputSandbox{ns: ns, path: "/run/netns/" + ns, addr: addr, hostIf: "t19crt"}
}

// firewall installs the daemon's tables in h's namespace: table ip tether
// (no networks: its NAT chain alone turns conntrack on in the namespace,
// as on every daemon host) and the VXLAN guard with both hosts as members.
func (r *tputRig) firewall(h *tputHost) {
	ctx := context.Background()
	f, err := firewall.NewNFTWith(firewall.Options{NetNS: h.path})
	if err != nil {
		r.tb.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(ctx, nil, nil); err != nil {
		r.tb.Fatal(err)
	}
	g, err := firewall.NewVXLANGuard(h.path)
	if err != nil {
		r.tb.Fatal(err)
	}
	defer g.Close()
	if err := g.SetNodes(ctx, []netip.Addr{netip.MustParseAddr(ulSubnet + "10"), netip.MustParseAddr(ulSubnet + "11")}); err != nil {
		r.tb.Fatal(err)
	}
}

// feature sets offload features on a link of the namespace at path and
// returns what restores the old values.
func feature(tb testing.TB, path, link string, want map[string]bool) func() {
	tb.Helper()
	old := map[string]bool{}
	err := tns.Do(path, func() error {
		have, err := nlutil.Features(link)
		if err != nil {
			return err
		}
		for f := range want {
			old[f] = have[f].Active
		}
		return nlutil.SetFeatures(link, want)
	})
	if err != nil {
		tb.Fatalf("features %v on %s in %s: %v", want, link, path, err)
	}
	return func() {
		if err := tns.Do(path, func() error { return nlutil.SetFeatures(link, old) }); err != nil {
			tb.Errorf("restore features on %s: %v", link, err)
		}
	}
}

// link is a link of the rig: a namespace path and a name.
type link struct{ path, name string }

// vethEnds are both ends of each host's overlay sandbox veth.
func (r *tputRig) vethEnds() []link {
	var ls []link
	for _, h := range r.h {
		ls = append(ls, link{h.path, h.sb.hostIf}, link{h.sb.path, "eth0"})
	}
	return ls
}

func (r *tputRig) vxlans() []link {
	return []link{{r.h[0].path, ovl.VxlanName(tputVNI)}, {r.h[1].path, ovl.VxlanName(tputVNI)}}
}

func (r *tputRig) underlays() []link {
	return []link{{r.h[0].path, "eth0"}, {r.h[1].path, "eth0"}}
}

// features sets want on every link and returns the undo of all.
func features(tb testing.TB, want map[string]bool, ls ...[]link) func() {
	var undo []func()
	for _, group := range ls {
		for _, l := range group {
			undo = append(undo, feature(tb, l.path, l.name, want))
		}
	}
	return func() {
		for _, u := range slices.Backward(undo) {
			u()
		}
	}
}

// sysfs writes a /sys/class/net value of a link (ip netns exec mounts the
// namespace's sysfs) and returns what restores it.
func sysfs(tb testing.TB, l link, attr, val string) func() {
	tb.Helper()
	ns := strings.TrimPrefix(l.path, "/run/netns/")
	file := "/sys/class/net/" + l.name + "/" + attr
	old, err := testutil.InNS(ns, "cat", file)
	if err != nil {
		tb.Fatalf("read %s in %s: %v %s", file, ns, err, old)
	}
	set := func(v string) {
		if out, err := testutil.InNS(ns, "sh", "-c", "echo "+v+" > "+file); err != nil {
			tb.Fatalf("write %s=%s in %s: %v %s", file, v, ns, err, out)
		}
	}
	set(val)
	return func() { set(strings.TrimSpace(old)) }
}

// recreateVxlan replaces each host's VXLAN device by one made with `ip link
// add ... extra` (the same configuration as the driver's plus extra), then
// re-adds the peers; the undo deletes it and lets the driver make its own.
func (r *tputRig) recreateVxlan(extra ...string) func() {
	r.tb.Helper()
	for _, h := range r.h {
		name := ovl.VxlanName(tputVNI)
		mustIP(r.tb, "-n", h.ns, "link", "del", name)
		args := append([]string{"-n", h.ns, "link", "add", name, "mtu", "1450", "type", "vxlan", "id", strconv.Itoa(tputVNI),
			"dstport", "4789", "local", h.addr, "dev", "eth0", "nolearning", "proxy"}, extra...)
		mustIP(r.tb, args...)
		mustIP(r.tb, "-n", h.ns, "link", "set", name, "alias", ovl.NetworkAlias(h.net.ID), "master", ovl.BridgeName(tputVNI), "up")
	}
	r.mesh()
	return func() {
		for _, h := range r.h {
			mustIP(r.tb, "-n", h.ns, "link", "del", ovl.VxlanName(tputVNI))
			if err := h.drv.CreateNetwork(context.Background(), h.net); err != nil {
				r.tb.Fatal(err)
			}
		}
		r.mesh()
	}
}

// setMTU sets the underlay's MTU to mtu and the overlay's links (VXLAN
// device, bridge, both veth ends) to mtu-50, and returns the undo (1500).
func (r *tputRig) setMTU(mtu int) func() {
	r.tb.Helper()
	set := func(mtu int) {
		m, o := strconv.Itoa(mtu), strconv.Itoa(mtu-ovl.Overhead)
		// raise from the bottom up, lower from the top down
		under := [][]string{{"-n", r.sw, "link", "set", "ulp0", "mtu", m}, {"-n", r.sw, "link", "set", "ulp1", "mtu", m}}
		var over [][]string
		for _, h := range r.h {
			under = append(under, []string{"-n", h.ns, "link", "set", "eth0", "mtu", m})
			over = append(over, []string{"-n", h.ns, "link", "set", ovl.VxlanName(tputVNI), "mtu", o},
				[]string{"-n", h.ns, "link", "set", h.sb.hostIf, "mtu", o},
				[]string{"-n", h.sb.ns, "link", "set", "eth0", "mtu", o},
				[]string{"-n", h.ns, "link", "set", ovl.BridgeName(tputVNI), "mtu", o})
		}
		cmds := append(under, over...)
		if mtu <= 1500 {
			slices.Reverse(cmds)
		}
		for _, c := range cmds {
			mustIP(r.tb, c...)
		}
	}
	set(mtu)
	return func() { set(1500) }
}

// applyKnobs applies the named knobs and returns the undo of all.
func (r *tputRig) applyKnobs(names ...string) func() {
	var undo []func()
	for _, k := range knobs() {
		if slices.Contains(names, k.Name) {
			undo = append(undo, k.apply(r))
		}
	}
	return func() {
		for _, u := range slices.Backward(undo) {
			u()
		}
	}
}

// restartDrivers closes both hosts' drivers and makes new ones with
// BypassEnv set to env ("": unset), as daemons restarted with it: the
// network, then its endpoint.
func (r *tputRig) restartDrivers(env string) {
	r.tb.Helper()
	old, had := os.LookupEnv(ovl.BypassEnv)
	if env == "" {
		os.Unsetenv(ovl.BypassEnv)
	} else {
		os.Setenv(ovl.BypassEnv, env)
	}
	defer func() {
		if had {
			os.Setenv(ovl.BypassEnv, old)
		} else {
			os.Unsetenv(ovl.BypassEnv)
		}
	}()
	for _, h := range r.h {
		if err := h.drv.Close(); err != nil {
			r.tb.Fatal(err)
		}
		h.drv = ovl.NewAt(h.h, h.path)
		if err := h.drv.CreateNetwork(context.Background(), h.net); err != nil {
			r.tb.Fatal(err)
		}
		if _, err := h.drv.Repair(context.Background(), h.net, h.sb.ep, h.sb.path, nil); err != nil {
			r.tb.Fatal(err)
		}
		if !h.drv.Bypassing() || h.drv.TunnelInBPF() != (env == "") {
			r.tb.Fatalf("driver with %s=%q: bypass %v, tunnel in BPF %v", ovl.BypassEnv, env, h.drv.Bypassing(), h.drv.TunnelInBPF())
		}
	}
}

// hostSysctl sets a sysctl in both host namespaces and returns the undo.
func (r *tputRig) hostSysctl(key, val string) func() {
	r.tb.Helper()
	var old []string
	for _, h := range r.h {
		o := strings.TrimSpace(testutil.Must(r.tb, "ip", "netns", "exec", h.ns, "sysctl", "-n", key))
		old = append(old, o)
		testutil.Must(r.tb, "ip", "netns", "exec", h.ns, "sysctl", "-q", "-w", key+"="+val)
	}
	return func() {
		for i, h := range r.h {
			testutil.Must(r.tb, "ip", "netns", "exec", h.ns, "sysctl", "-q", "-w", key+"="+old[i])
		}
	}
}

// nft runs nft in a host namespace.
func (r *tputRig) nft(h *tputHost, args ...string) {
	r.tb.Helper()
	testutil.Must(r.tb, "ip", append([]string{"netns", "exec", h.ns, "nft"}, args...)...)
}

// knob is one change to the datapath, measured on its own against the
// underlay; apply returns its undo.
type knob struct {
	Name  string
	What  string
	apply func(r *tputRig) func()
	pin   bool // iperf3 -A: client and server on different cores
}

func knobs() []knob {
	all := func(m map[string]bool, sel func(r *tputRig) [][]link) func(r *tputRig) func() {
		return func(r *tputRig) func() { return features(r.tb, m, sel(r)...) }
	}
	veths := func(r *tputRig) [][]link { return [][]link{r.vethEnds()} }
	vxlans := func(r *tputRig) [][]link { return [][]link{r.vxlans()} }
	unders := func(r *tputRig) [][]link { return [][]link{r.underlays()} }
	gro := map[string]bool{"rx-gro": true}
	noTnl := map[string]bool{"tx-udp_tnl-segmentation": false, "tx-udp_tnl-csum-segmentation": false}
	noCsumTnl := map[string]bool{"tx-udp_tnl-csum-segmentation": false}
	both := func(a, b func(r *tputRig) func()) func(r *tputRig) func() {
		return func(r *tputRig) func() {
			ua := a(r)
			ub := b(r)
			return func() { ub(); ua() }
		}
	}
	return []knob{
		{Name: "baseline", What: "the driver's datapath as it is", apply: func(*tputRig) func() { return func() {} }},
		{Name: "vxlan-noudpcsum", What: "VXLAN device made with noudpcsum (outer UDP checksum 0)",
			apply: func(r *tputRig) func() { return r.recreateVxlan("noudpcsum") }},
		{Name: "vxlan-udpcsum", What: "VXLAN device made with udpcsum explicitly",
			apply: func(r *tputRig) func() { return r.recreateVxlan("udpcsum") }},
		{Name: "veth-gro", What: "rx-gro on both ends of the sandbox veths (veth NAPI)", apply: all(gro, veths)},
		{Name: "veth-gro-list", What: "rx-gro and rx-gro-list on the sandbox veths",
			apply: all(map[string]bool{"rx-gro": true, "rx-gro-list": true}, veths)},
		{Name: "veth-udp-gro-fwd", What: "rx-gro and rx-udp-gro-forwarding on the sandbox veths",
			apply: all(map[string]bool{"rx-gro": true, "rx-udp-gro-forwarding": true}, veths)},
		{Name: "vxlan-gro-off", What: "rx-gro off on the VXLAN devices", apply: all(map[string]bool{"rx-gro": false}, vxlans)},
		{Name: "vxlan-gso-off", What: "tx-generic-segmentation off on the VXLAN devices",
			apply: all(map[string]bool{"tx-generic-segmentation": false}, vxlans)},
		{Name: "underlay-gro", What: "rx-gro and rx-udp-gro-forwarding on the underlay interfaces (udp_tunnel GRO on receive)",
			apply: all(map[string]bool{"rx-gro": true, "rx-udp-gro-forwarding": true}, unders)},
		{Name: "underlay-no-tnl-tso", What: "tx-udp_tnl-segmentation and tx-udp_tnl-csum-segmentation off on the underlay (software segmentation of VXLAN, as a NIC without tunnel TSO)",
			apply: all(noTnl, unders)},
		{Name: "nic-no-csum-tnl-tso", What: "tx-udp_tnl-csum-segmentation off on the underlay (a NIC that segments VXLAN only with a zero outer UDP checksum)",
			apply: all(noCsumTnl, unders)},
		{Name: "nic-no-csum-tnl-tso+noudpcsum", What: "nic-no-csum-tnl-tso with the VXLAN devices made noudpcsum",
			apply: both(all(noCsumTnl, unders), func(r *tputRig) func() { return r.recreateVxlan("noudpcsum") })},
		{Name: "nic-no-csum-tnl-tso+udpcsum", What: "nic-no-csum-tnl-tso with the VXLAN devices made udpcsum",
			apply: both(all(noCsumTnl, unders), func(r *tputRig) func() { return r.recreateVxlan("udpcsum") })},
		{Name: "nic-no-tnl-tso+noudpcsum", What: "underlay-no-tnl-tso with the VXLAN devices made noudpcsum",
			apply: both(all(noTnl, unders), func(r *tputRig) func() { return r.recreateVxlan("noudpcsum") })},
		{Name: "jumbo-underlay", What: "underlay MTU 9000 (switch, ports, host interfaces), overlay links 8950: both paths with jumbo frames",
			apply: func(r *tputRig) func() { return r.setMTU(9000) }},
		{Name: "veth-tso-off", What: "tcp-segmentation-offload off on the sandbox veths",
			apply: all(map[string]bool{"tx-tcp-segmentation": false}, veths)},
		{Name: "txqueuelen-0", What: "txqueuelen 0 on the sandbox veths and VXLAN devices", apply: func(r *tputRig) func() {
			var undo []func()
			for _, l := range append(r.vethEnds(), r.vxlans()...) {
				undo = append(undo, sysfs(r.tb, l, "tx_queue_len", "0"))
			}
			return func() {
				for _, u := range undo {
					u()
				}
			}
		}},
		{Name: "no-firewall", What: "the daemon's nftables tables deleted in the host namespaces (no conntrack, no VXLAN guard)",
			apply: func(r *tputRig) func() {
				for _, h := range r.h {
					r.nft(h, "delete", "table", "ip", "tether")
					r.nft(h, "delete", "table", "ip", "tether_vxlan")
				}
				return func() {
					for _, h := range r.h {
						r.firewall(h)
					}
				}
			}},
		{Name: "vxlan-notrack", What: "udp dport 4789 notrack at raw priority in prerouting and output (the guard stays)",
			apply: func(r *tputRig) func() {
				for _, h := range r.h {
					r.nft(h, "add table ip t19c_notrack; "+
						"add chain ip t19c_notrack pre { type filter hook prerouting priority raw; policy accept; }; "+
						"add chain ip t19c_notrack out { type filter hook output priority raw; policy accept; }; "+
						"add rule ip t19c_notrack pre udp dport 4789 notrack; add rule ip t19c_notrack out udp dport 4789 notrack")
				}
				return func() {
					for _, h := range r.h {
						r.nft(h, "delete", "table", "ip", "t19c_notrack")
					}
				}
			}},
		{Name: "guard-only", What: "table ip tether deleted in the host namespaces, the VXLAN guard kept: no conntrack (nothing else asks for it there)",
			apply: func(r *tputRig) func() {
				for _, h := range r.h {
					r.nft(h, "delete", "table", "ip", "tether")
				}
				return func() {
					for _, h := range r.h {
						r.firewall(h)
					}
				}
			}},
		{Name: "br-nf-off", What: "net.bridge.bridge-nf-call-iptables=0 in the host namespaces: bridged overlay frames skip the IPv4 hooks (br_netfilter)",
			apply: func(r *tputRig) func() { return r.hostSysctl("net.bridge.bridge-nf-call-iptables", "0") }},
		{Name: "overlay-notrack", What: "notrack at raw priority for VXLAN (udp dport 4789, prerouting and output) and for frames bridged in from the overlay's ports (iifname vto*, tvx-*: br_netfilter), the guard kept",
			apply: func(r *tputRig) func() {
				for _, h := range r.h {
					r.nft(h, "add table ip t19c_notrack; "+
						"add chain ip t19c_notrack pre { type filter hook prerouting priority raw; policy accept; }; "+
						"add chain ip t19c_notrack out { type filter hook output priority raw; policy accept; }; "+
						"add rule ip t19c_notrack pre udp dport 4789 notrack; add rule ip t19c_notrack out udp dport 4789 notrack; "+
						`add rule ip t19c_notrack pre iifname "vto*" notrack; add rule ip t19c_notrack pre iifname "tvx-*" notrack`)
				}
				return func() {
					for _, h := range r.h {
						r.nft(h, "delete", "table", "ip", "t19c_notrack")
					}
				}
			}},
		{Name: "fw-same-bridge", What: "tov-N . tov-N added to table ip tether's same_bridge set: bridged overlay frames (br_netfilter) leave its forward chain at the first rule",
			apply: func(r *tputRig) func() {
				elem := fmt.Sprintf(`{ "%s" . "%s" }`, ovl.BridgeName(tputVNI), ovl.BridgeName(tputVNI))
				for _, h := range r.h {
					r.nft(h, "add element ip tether same_bridge "+elem)
				}
				return func() {
					for _, h := range r.h {
						r.nft(h, "delete element ip tether same_bridge "+elem)
					}
				}
			}},
		{Name: "fw-same-bridge+notrack", What: "fw-same-bridge and overlay-notrack together",
			apply: func(r *tputRig) func() { return r.applyKnobs("fw-same-bridge", "overlay-notrack") }},
		{Name: "combined", What: "vxlan-gro-off, br-nf-off and overlay-notrack together (the rig's best single knobs)",
			apply: func(r *tputRig) func() { return r.applyKnobs("vxlan-gro-off", "br-nf-off", "overlay-notrack") }},
		{Name: "bypass-off", What: "the bridge bypass off (the drivers closed, as daemons that stopped): every overlay frame goes through the tov-N bridge and br_netfilter",
			apply: func(r *tputRig) func() {
				for _, h := range r.h {
					if err := h.drv.Close(); err != nil {
						r.tb.Fatal(err)
					}
				}
				return func() { r.restartDrivers("") }
			}},
		{Name: "tunnel-off", What: "the VXLAN tunnel in BPF off (" + ovl.BypassEnv + "=bridge): the bridge bypass only, the VXLAN devices encapsulate and decapsulate",
			apply: func(r *tputRig) func() {
				r.restartDrivers("bridge")
				return func() { r.restartDrivers("") }
			}},
		{Name: "pinned", What: "iperf3 -A 0,1: client and server pinned to different cores (both paths)", pin: true,
			apply: func(*tputRig) func() { return func() {} }},
		{Name: "veth-gro-threaded", What: "rx-gro on the sandbox veths with threaded NAPI (the receive side may run on the other core)",
			apply: func(r *tputRig) func() {
				undo := []func(){features(r.tb, gro, r.vethEnds())}
				for _, l := range r.vethEnds() {
					undo = append(undo, sysfs(r.tb, l, "threaded", "1"))
				}
				return func() {
					for _, u := range slices.Backward(undo) {
						u()
					}
				}
			}},
	}
}

// cpuTimes is /proc/stat's per-CPU user, system and softirq ticks.
type cpuTimes [][3]int64

func readCPU() cpuTimes {
	b, _ := os.ReadFile("/proc/stat")
	var out cpuTimes
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		n := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
		out = append(out, [3]int64{n(1) + n(2), n(3), n(7)})
	}
	return out
}

// CPUShare is where one run's CPU time went, per CPU, as a share of its
// wall time: user, system, softirq.
type CPUShare struct {
	User, Sys, Softirq []float64
}

func share(a, b cpuTimes, wall time.Duration) CPUShare {
	var s CPUShare
	ticks := wall.Seconds() * attach.ClockTicks
	for i := range min(len(a), len(b)) {
		s.User = append(s.User, round3(float64(b[i][0]-a[i][0])/ticks))
		s.Sys = append(s.Sys, round3(float64(b[i][1]-a[i][1])/ticks))
		s.Softirq = append(s.Softirq, round3(float64(b[i][2]-a[i][2])/ticks))
	}
	return s
}

// Run is one iperf3 run.
type Run struct {
	Gbps      float64  `json:"gbps"`
	SenderCPU float64  `json:"sender_cpu_pct"`   // iperf3's host_total (client)
	RecvCPU   float64  `json:"receiver_cpu_pct"` // remote_total (server)
	CPU       CPUShare `json:"cpu"`              // machine, per CPU: user, sys, softirq shares
}

// tputIperf runs iperf3 server in serverNS on addr and the client in
// clientNS, one stream for seconds; pin puts them on cores 0 and 1.
func tputIperf(tb testing.TB, serverNS, clientNS, addr string, seconds int, pin bool) Run {
	tb.Helper()
	srv := exec.Command("ip", "netns", "exec", serverNS, "iperf3", "-s", "-1", "-B", addr, "-p", "43201")
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	args := []string{"netns", "exec", clientNS, "iperf3", "-c", addr, "-p", "43201", "-t", strconv.Itoa(seconds), "-J"}
	if pin && runtime.NumCPU() > 1 {
		args = append(args, "-A", "0,1")
	}
	var out []byte
	var err error
	var c0, c1 cpuTimes
	var wall time.Duration
	for range 50 {
		c0, t0 := readCPU(), time.Now()
		out, err = exec.Command("ip", args...).CombinedOutput()
		c1, wall = readCPU(), time.Since(t0)
		if !strings.Contains(string(out), "unable to connect") {
			_ = c0
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			CPU struct {
				Host   float64 `json:"host_total"`
				Remote float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	if err != nil || json.Unmarshal(out, &res) != nil || res.Error != "" || res.End.SumReceived.BitsPerSecond <= 0 {
		tb.Fatalf("iperf3 to %s from %s: %v %s", addr, clientNS, err, out)
	}
	return Run{Gbps: round3(res.End.SumReceived.BitsPerSecond / 1e9), SenderCPU: round3(res.End.CPU.Host),
		RecvCPU: round3(res.End.CPU.Remote), CPU: share(c0, c1, wall)}
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// KnobResult is one knob's rounds and ratios.
type KnobResult struct {
	Name        string    `json:"name"`
	What        string    `json:"what"`
	Underlay    []Run     `json:"underlay"`
	Overlay     []Run     `json:"overlay"`
	Routed      []Run     `json:"routed,omitempty"` // bridge sandbox to bridge sandbox, routed, no VXLAN
	MedianRatio float64   `json:"median_ratio"`     // median overlay / median underlay
	BestRatio   float64   `json:"best_ratio"`       // best overlay / best underlay
	RoundRatios []float64 `json:"round_ratios"`     // overlay / underlay of each round
	RoutedRatio float64   `json:"routed_median_ratio,omitempty"`
	// CostRatio is median underlay ÷ median overlay of the CPU time per
	// Gbit (iperf3's sender + receiver CPU, which includes the softirq work
	// done in their context): the throughput ratio a CPU-bound quiet
	// machine would show, and far less sensitive to other load than the
	// throughput itself. CostRounds is the same per round.
	CostRatio  float64   `json:"cpu_cost_ratio"`
	CostRounds []float64 `json:"cpu_cost_round_ratios"`
	// RoutedCost is median underlay ÷ median routed CPU per Gbit.
	RoutedCost float64 `json:"routed_cpu_cost_ratio,omitempty"`
	// OverlayVsRouted is median overlay / median routed: the cost of VXLAN
	// alone, hops being equal.
	OverlayVsRouted float64 `json:"overlay_vs_routed,omitempty"`
}

// cost is CPU seconds (sender + receiver) per Gbit of each run.
func cost(rs []Run) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = (r.SenderCPU + r.RecvCPU) / 100 / r.Gbps
	}
	return out
}

func gbps(rs []Run) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = r.Gbps
	}
	return out
}

// measureKnob applies k, runs rounds of underlay and overlay (and routed
// when routed is set) alternating the order, and undoes k.
func (r *tputRig) measureKnob(k knob, rounds, seconds int, routed bool) KnobResult {
	undo := k.apply(r)
	defer undo()
	a, b := r.h[0], r.h[1]
	res := KnobResult{Name: k.Name, What: k.What}
	under := func() { res.Underlay = append(res.Underlay, tputIperf(r.tb, b.ns, a.ns, b.addr, seconds, k.pin)) }
	over := func() {
		res.Overlay = append(res.Overlay, tputIperf(r.tb, b.sb.ns, a.sb.ns, b.sb.addr, seconds, k.pin))
	}
	rout := func() {
		if routed {
			res.Routed = append(res.Routed, tputIperf(r.tb, b.rt.ns, a.rt.ns, b.rt.addr, seconds, k.pin))
		}
	}
	for i := range rounds {
		if i%2 == 0 {
			under()
			over()
			rout()
		} else {
			rout()
			over()
			under()
		}
		res.RoundRatios = append(res.RoundRatios, round3(res.Overlay[i].Gbps/res.Underlay[i].Gbps))
	}
	u, o := gbps(res.Underlay), gbps(res.Overlay)
	res.MedianRatio = round3(stats.Median(o) / stats.Median(u))
	res.BestRatio = round3(slices.Max(o) / slices.Max(u))
	cu, co := cost(res.Underlay), cost(res.Overlay)
	res.CostRatio = round3(stats.Median(cu) / stats.Median(co))
	for i := range cu {
		res.CostRounds = append(res.CostRounds, round3(cu[i]/co[i]))
	}
	if routed {
		rt := gbps(res.Routed)
		res.RoutedRatio = round3(stats.Median(rt) / stats.Median(u))
		res.OverlayVsRouted = round3(stats.Median(o) / stats.Median(rt))
		res.RoutedCost = round3(stats.Median(cu) / stats.Median(cost(res.Routed)))
	}
	return res
}

// profile records `perf record -a -g` during one underlay and one overlay
// run into dir/{underlay,overlay}.data and writes perf report's top
// symbols beside each (.txt).
func (r *tputRig) profile(dir string, seconds int) {
	if _, err := exec.LookPath("perf"); err != nil {
		r.tb.Log("perf not installed: no profile")
		return
	}
	a, b := r.h[0], r.h[1]
	for _, p := range []struct{ name, srv, cli, addr string }{
		{"underlay", b.ns, a.ns, b.addr}, {"overlay", b.sb.ns, a.sb.ns, b.sb.addr},
	} {
		data := dir + "/" + p.name + ".data"
		rec := exec.Command("perf", "record", "-q", "-a", "-g", "-o", data, "--", "sleep", strconv.Itoa(seconds))
		if err := rec.Start(); err != nil {
			r.tb.Fatal(err)
		}
		run := tputIperf(r.tb, p.srv, p.cli, p.addr, seconds, false)
		_ = rec.Wait()
		rep, _ := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "sym", "-g", "none",
			"--percent-limit", "0.7").Output()
		_ = os.WriteFile(dir+"/"+p.name+".txt", append([]byte(fmt.Sprintf("# %s: %.3f Gbit/s\n", p.name, run.Gbps)), rep...), 0o644)
	}
}

// TputReport is the JSON of the overlay-tput scenario.
type TputReport struct {
	Date        time.Time    `json:"date"`
	Commit      string       `json:"commit"`
	Kernel      string       `json:"kernel"`
	NProc       int          `json:"nproc"`
	LoadStart   string       `json:"loadavg_start"`
	LoadEnd     string       `json:"loadavg_end"`
	Seconds     int          `json:"seconds_per_run"`
	Rounds      int          `json:"rounds"`
	BrNetfilter bool         `json:"bridge_nf_call_iptables"` // in the host namespaces (br_netfilter built in or loaded)
	Knobs       []KnobResult `json:"knobs"`
	// Final is the product's datapath measured again at the end (the
	// figure of issue 19's row 3), with the routed reference.
	Final KnobResult `json:"final"`
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

func gitCommit() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func measureTput(tb testing.TB, only []string, rounds, seconds int) TputReport {
	testutil.RequireRoot(tb)
	attach.RequireIperf3(tb)
	rep := TputReport{Date: time.Now().UTC(), Commit: gitCommit(), NProc: runtime.NumCPU(), LoadStart: loadavg(),
		Seconds: seconds, Rounds: rounds}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		rep.Kernel = strings.TrimSpace(string(b))
	}
	r := newTputRig(tb)
	out, err := testutil.InNS(r.h[0].ns, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables")
	rep.BrNetfilter = err == nil && strings.TrimSpace(out) == "1"
	for _, k := range knobs() {
		if len(only) > 0 && !slices.Contains(only, k.Name) {
			continue
		}
		res := r.measureKnob(k, rounds, seconds, k.Name == "baseline")
		tb.Logf("%-20s median %.3f best %.3f rounds %v (underlay %v overlay %v); CPU cost ratio %.3f rounds %v", k.Name,
			res.MedianRatio, res.BestRatio, res.RoundRatios, gbps(res.Underlay), gbps(res.Overlay), res.CostRatio, res.CostRounds)
		rep.Knobs = append(rep.Knobs, res)
	}
	if dir := os.Getenv("BENCH_PERF"); dir != "" {
		r.profile(dir, seconds)
	}
	base := knobs()[0]
	base.Name, base.What = "final", "the driver's datapath, measured again at the end, with the routed reference"
	rep.Final = r.measureKnob(base, rounds, seconds, true)
	tb.Logf("final: median %.3f best %.3f; routed ÷ underlay %.3f; overlay ÷ routed %.3f; CPU cost ratio %.3f (routed %.3f)",
		rep.Final.MedianRatio, rep.Final.BestRatio, rep.Final.RoutedRatio, rep.Final.OverlayVsRouted, rep.Final.CostRatio, rep.Final.RoutedCost)
	rep.LoadEnd = loadavg()
	return rep
}

// TestOverlayThroughputSmoke runs the scenario small: a few knobs, one
// short round each; every figure must be there.
func TestOverlayThroughputSmoke(t *testing.T) {
	rep := measureTput(t, []string{"baseline", "vxlan-noudpcsum", "veth-gro"}, 1, 1)
	if len(rep.Knobs) != 3 || len(rep.Final.Routed) != 1 {
		t.Fatalf("incomplete report: %+v", rep)
	}
	for _, k := range append(rep.Knobs, rep.Final) {
		if k.MedianRatio <= 0 || len(k.Overlay) != 1 || len(k.Underlay) != 1 {
			t.Errorf("knob %s: incomplete: %+v", k.Name, k)
		}
	}
}

// TestOverlayThroughputReport is the full run (BENCH_REPORT=1, bench/run.sh
// overlay-tput): every knob, BENCH_REPS rounds (default 3) of 5-s runs;
// BENCH_KNOBS=a,b limits the knobs.
func TestOverlayThroughputReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (bench/run.sh overlay-tput)")
	}
	var only []string
	if s := os.Getenv("BENCH_KNOBS"); s != "" {
		only = strings.Split(s, ",")
	}
	rep := measureTput(t, only, max(attach.EnvInt("BENCH_REPS", 3), 3), attach.EnvInt("BENCH_SECONDS", 5))
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
