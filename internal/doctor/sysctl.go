package doctor

// Sysctl checks: IP forwarding and br_netfilter.

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/tether-net/tether/internal/doctor/report"
)

// checkIPForward: net.ipv4.ip_forward (and IPv6 forwarding when a network
// has IPv6) must be on for sandboxes to reach beyond their bridge.
func (r *run) checkIPForward() string {
	v, err := r.k.Sysctl("net/ipv4/ip_forward")
	if err != nil {
		r.ipForward = true // unknown: the path trace does not blame it
		return "read net.ipv4.ip_forward: " + err.Error()
	}
	r.ipForward = v == "1"
	need4, need6 := r.needForwarding()
	if v != "1" && need4 != "" {
		r.add(report.Finding{Check: CheckIPForward, Severity: report.Error, Subject: "net.ipv4.ip_forward=" + v,
			What: "IPv4 forwarding is off",
			Why:  "the host routes nothing between interfaces: sandboxes on " + need4 + " reach only their own network and the host; no outside, no published port from other hosts, no routing between networks",
			Fix:  "sysctl -w net.ipv4.ip_forward=1 (persist it in /etc/sysctl.d/), or set \"ip-forward\": true in daemon.json and restart the daemon"})
	}
	if need6 == "" {
		return ""
	}
	v6, err := r.k.Sysctl("net/ipv6/conf/all/forwarding")
	if err == nil && v6 != "1" {
		r.add(report.Finding{Check: CheckIPForward, Severity: report.Error, Subject: "net.ipv6.conf.all.forwarding=" + v6,
			What: "IPv6 forwarding is off",
			Why:  "sandboxes on " + need6 + " have no IPv6 way out",
			Fix:  "sysctl -w net.ipv6.conf.all.forwarding=1, or set \"ip-forward\": true in daemon.json and restart the daemon"})
	}
	return ""
}

// needForwarding names the non-internal bridge networks with IPv4 and
// with IPv6 subnets ("" when none).
func (r *run) needForwarding() (v4, v6 string) {
	var a, b []string
	for _, n := range r.st.Networks {
		if n.Internal || n.Bridge == "" || n.Global {
			continue
		}
		if n.Subnet.IsValid() {
			a = append(a, n.Name)
		}
		if n.Subnet6.IsValid() {
			b = append(b, n.Name)
		}
	}
	return strings.Join(a, ", "), strings.Join(b, ", ")
}

// checkBrNetfilter reads whether br_netfilter is loaded and makes bridged
// traffic pass the IP hooks. Tether needs neither (icc=false uses the
// bridge port isolated flag; its table accepts same-bridge traffic), but
// with bridge-nf-call-iptables=1 every forward chain of every table sees
// the traffic between two sandboxes of one network: a drop there cuts
// them apart too (reported by forward_chains).
func (r *run) checkBrNetfilter() string {
	v, err := r.k.Sysctl("net/bridge/bridge-nf-call-iptables")
	if errors.Is(err, fs.ErrNotExist) {
		return "" // not loaded: nothing to say
	}
	if err != nil {
		return "read net.bridge.bridge-nf-call-iptables: " + err.Error()
	}
	r.bridgeNF = v == "1"
	v6, _ := r.k.Sysctl("net/bridge/bridge-nf-call-ip6tables")
	if !r.bridgeNF && v6 != "1" {
		return ""
	}
	r.add(report.Finding{Check: CheckBrNetfilter, Severity: report.Info,
		Subject: fmt.Sprintf("net.bridge.bridge-nf-call-iptables=%s, bridge-nf-call-ip6tables=%s", v, v6),
		What:    "br_netfilter is loaded and bridged traffic passes the IP firewall hooks",
		Why:     "traffic between sandboxes of one network then crosses every table's forward chain, not only traffic that leaves the bridge: a chain of another firewall that drops forwarded packets cuts sandboxes of the same network apart (Tether's own table accepts that traffic)",
		Fix:     "nothing, unless forward_chains reports a chain that drops; then accept Tether's bridges there, or sysctl -w net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 if nothing else needs br_netfilter"})
	return ""
}
