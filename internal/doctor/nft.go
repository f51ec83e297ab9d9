package doctor

// nftables checks: other tables' forward chains that drop Tether's
// traffic, and Tether's own table.

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tether-net/tether/internal/doctor/report"
)

// tableName is Tether's nftables table (firewall.TableName).
const tableName = "tether"

// packet is what the doctor asks a chain about: a new connection from a
// sandbox on bridge iif (address src) to oif ("" somewhere outside).
type packet struct {
	iif, oif string
	src      netip.Addr
}

// verdict walks chain c's rules for packet p as the kernel would for the
// first packet of a connection: the first rule whose matches all hold
// decides. Rules with matches the doctor cannot evaluate are passed over;
// a jump or goto ends the walk as "accept" (the doctor does not follow
// it). It returns whether p is dropped and by what.
func verdict(c Chain, p packet) (bool, string) {
	for _, r := range c.Rules {
		if !ruleTakes(r, p) {
			continue
		}
		switch r.Verdict {
		case "drop", "reject":
			return true, fmt.Sprintf("rule handle %d (%s)", r.Handle, describeRule(r))
		case "accept", "jump", "goto":
			return false, ""
		}
	}
	if c.Policy == "drop" {
		return true, "policy drop"
	}
	return false, ""
}

// ruleTakes reports whether every match of r holds for p (conntrack
// matches do not: p is a new connection; unknown matches do not either).
func ruleTakes(r Rule, p packet) bool {
	if r.Other || r.CtState || r.Dst.IsValid() {
		return false
	}
	if (r.NFProto == "ipv6" && !p.src.Is6()) || (r.NFProto == "ipv4" && p.src.Is6()) {
		return false
	}
	if r.IIF != "" && !ifMatches(r.IIF, p.iif) {
		return false
	}
	if r.OIF != "" && (p.oif == "" || !ifMatches(r.OIF, p.oif)) {
		return false
	}
	if r.Src.IsValid() && (!p.src.IsValid() || !r.Src.Contains(p.src)) {
		return false
	}
	return true
}

func describeRule(r Rule) string {
	var m []string
	if r.IIF != "" {
		m = append(m, fmt.Sprintf("iifname %q", r.IIF))
	}
	if r.OIF != "" {
		m = append(m, fmt.Sprintf("oifname %q", r.OIF))
	}
	if r.Src.IsValid() {
		m = append(m, "saddr "+r.Src.String())
	}
	m = append(m, r.Verdict)
	return strings.Join(m, " ")
}

// chainName is how nft names a chain: "table inet filter chain forward".
func chainName(c Chain) string {
	return fmt.Sprintf("table %s %s chain %s", c.Family, c.Table, c.Name)
}

func ours(c Chain) bool {
	return c.Table == tableName && (c.Family == "ip" || c.Family == "ip6")
}

// checkForward finds the forward chains of other tables that drop what
// sandboxes send out (and, with br_netfilter, what they send each other).
func (r *run) checkForward() string {
	chains, err := r.k.ForwardChains()
	if err != nil {
		return "list nftables forward chains: " + err.Error()
	}
	for _, c := range chains {
		if !ours(c) && c.Hook == "forward" && c.Type == "filter" {
			r.forward = append(r.forward, c)
		}
	}
	for _, c := range r.forward {
		switch c.Family {
		case "bridge":
			r.checkBridgeChain(c)
		case "ip", "ip6", "inet":
			r.checkChain(c)
		}
	}
	return ""
}

// bridgedDrop: a forward chain of family bridge sees every frame bridged
// from one port to another (with or without br_netfilter). Its rules match
// ports, not bridges: only a policy drop or a rule that drops every frame
// is judged.
func bridgedDrop(c Chain) (bool, string) {
	return verdict(c, packet{})
}

// checkBridgeChain reports a bridge-family forward chain that drops the
// frames between sandboxes of one network.
func (r *run) checkBridgeChain(c Chain) {
	drop, how := bridgedDrop(c)
	if !drop {
		return
	}
	var nets []string
	for _, n := range r.st.Networks {
		if n.Bridge != "" {
			nets = append(nets, n.Name)
		}
	}
	if len(nets) == 0 {
		return
	}
	r.add(report.Finding{Check: CheckForward, Severity: report.Error, Subject: chainName(c),
		What: fmt.Sprintf("%s (family bridge, hook forward) drops the frames bridged between ports: %s", chainName(c), how),
		Why:  "sandboxes of one network (" + strings.Join(nets, ", ") + ") cannot reach each other; they still reach the gateway and the outside",
		Fix:  fmt.Sprintf("accept Tether's bridges there: %s; or remove the chain (nft delete chain bridge %s %s)", r.ibrnameFix(c), c.Table, c.Name)})
}

func (r *run) ibrnameFix(c Chain) string {
	var out []string
	for _, n := range r.st.Networks {
		if n.Bridge != "" {
			out = append(out, fmt.Sprintf("nft insert rule bridge %s %s meta ibrname %q accept", c.Table, c.Name, n.Bridge))
		}
	}
	return strings.Join(out, "; ")
}

// checkChain reports the networks whose outgoing traffic c drops, and those
// whose sandboxes it cuts apart with br_netfilter on.
func (r *run) checkChain(c Chain) {
	var out, within []string
	var how string
	for _, n := range r.st.Networks {
		if !n.Firewalled || n.Internal || n.Bridge == "" || (c.Family == "ip6" && !n.Subnet6.IsValid()) {
			continue
		}
		src := n.Subnet.Addr()
		if c.Family == "ip6" {
			src = n.Subnet6.Addr()
		}
		if drop, why := verdict(c, packet{iif: n.Bridge, src: src}); drop {
			out, how = append(out, n.Name+" ("+n.Bridge+")"), why
		}
		if r.bridgeNF && c.Family != "ip6" {
			if drop, why := verdict(c, packet{iif: n.Bridge, oif: n.Bridge, src: src}); drop {
				within, how = append(within, n.Name), why
			}
		}
	}
	if len(out) == 0 && len(within) == 0 {
		return
	}
	why := "every base chain on the forward hook must accept a packet; an accept in Tether's table does not help. Sandboxes on these networks cannot reach the outside and their published ports are unreachable from other hosts"
	if len(within) > 0 {
		why += "; with br_netfilter (bridge-nf-call-iptables=1) sandboxes of " + strings.Join(within, ", ") + " cannot reach each other either"
	}
	r.add(report.Finding{Check: CheckForward, Severity: report.Error, Subject: chainName(c),
		What: fmt.Sprintf("%s (hook forward, priority %d) drops forwarded traffic of networks %s: %s", chainName(c), c.Priority, strings.Join(out, ", "), how),
		Why:  why, Fix: r.forwardFix(c, how)})
}

// forwardFix: accept rules for each open bridge in that chain (iptables
// syntax for iptables-nft's chains), or the daemon option that inserts them.
func (r *run) forwardFix(c Chain, how string) string {
	var fix []string
	for _, br := range r.st.openBridges() {
		if (c.Family == "ip" || c.Family == "ip6") && c.Table == "filter" && c.Name == "FORWARD" {
			cmd := "iptables"
			if c.Family == "ip6" {
				cmd = "ip6tables"
			}
			fix = append(fix, fmt.Sprintf("%[1]s -I FORWARD -i %[2]s -j ACCEPT; %[1]s -I FORWARD -o %[2]s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT; %[1]s -I FORWARD -o %[2]s -m conntrack --ctstate DNAT -j ACCEPT", cmd, br))
			continue
		}
		for _, m := range []string{`iifname "%[4]s" accept`, `oifname "%[4]s" ct state established,related accept`, `oifname "%[4]s" ct status dnat accept`} {
			fix = append(fix, fmt.Sprintf("nft insert rule %s %s %s "+m, c.Family, c.Table, c.Name, br))
		}
	}
	s := strings.Join(fix, "; ")
	if strings.HasPrefix(how, "rule handle") {
		h := strings.Fields(how)[2]
		return fmt.Sprintf("remove the rule (nft delete rule %s %s %s handle %s) or accept Tether's bridges before it: %s", c.Family, c.Table, c.Name, h, s)
	}
	if r.st.AcceptOtherTables {
		return "forward-accept-other-tables is on but the accept rules are missing: see the daemon log for \"insert accept rules\"; or add them yourself: " + s
	}
	return fmt.Sprintf("set \"forward-accept-other-tables\": true in daemon.json (Tether then inserts and removes accept rules for its bridges there), or add them yourself: %s", s)
}

// tableWant is what Tether's table must hold, per chain: its hook, type
// and the rules (by comment) without which a network loses its walls or
// its NAT.
var tableWant = []struct {
	chain, hook, typ string
	rules            []string
}{
	{"raw_prerouting", "prerouting", "filter", nil},
	{"forward", "forward", "filter", []string{"tether: nothing leaves an internal network", "tether: nothing enters an internal network", "tether: no traffic between networks"}},
	{"postrouting", "postrouting", "nat", []string{"tether: outbound NAT"}},
	{"prerouting", "prerouting", "nat", []string{"tether: published ports on every host address"}},
	{"output", "output", "nat", []string{"tether: published ports on every host address"}},
}

// checkTable compares table ip tether (and ip6 tether) with what the
// firewall installs for the networks on record.
func (r *run) checkTable() string {
	if !r.st.Firewall {
		return "iptables=false: Tether installs no firewall rules"
	}
	fams := []string{"ip"}
	if r.st.IPv6Firewall {
		fams = append(fams, "ip6")
	}
	for _, fam := range fams {
		t, err := r.k.Table(fam, tableName)
		if err != nil {
			return fmt.Sprintf("read table %s %s: %s", fam, tableName, err)
		}
		for _, what := range r.tableDiff(fam, t) {
			r.add(report.Finding{Check: CheckTable, Severity: report.Error, Subject: "table " + fam + " " + tableName, What: what,
				Why: "without it sandboxes lose their NAT, isolation between networks, the walls of internal networks and their published ports. The daemon restores its table within milliseconds after another program changes it (docs/firewall.md, Self-healing): a table still wrong means that restore failed or the daemon's firewall watcher is not running",
				Fix: "look for \"firewall\" in the daemon log; restart the daemon (it rebuilds the table at start in one batch); if a firewall manager (firewalld, ufw) reloads in a loop, stop it from flushing the whole ruleset"})
		}
	}
	return ""
}

// tableDiff lists what is wrong with table t of family fam.
func (r *run) tableDiff(fam string, t *Table) []string {
	name := "table " + fam + " " + tableName
	if t == nil {
		return []string{name + " is missing"}
	}
	var out []string
	for _, w := range tableWant {
		i := slices.IndexFunc(t.Chains, func(c Chain) bool { return c.Name == w.chain })
		if i < 0 {
			out = append(out, fmt.Sprintf("%s has no chain %s", name, w.chain))
			continue
		}
		c := t.Chains[i]
		if c.Hook != w.hook || c.Type != w.typ || c.Policy == "drop" {
			out = append(out, fmt.Sprintf("%s chain %s is type %s hook %s policy %s, want type %s hook %s policy accept", name, c.Name, c.Type, c.Hook, c.Policy, w.typ, w.hook))
		}
		for _, cmt := range w.rules {
			if !slices.ContainsFunc(c.Rules, func(r Rule) bool { return r.Comment == cmt }) {
				out = append(out, fmt.Sprintf("%s chain %s lacks its rule %q (flushed?)", name, c.Name, cmt))
			}
		}
		for _, rl := range c.Rules {
			if !strings.HasPrefix(rl.Comment, "tether: ") {
				out = append(out, fmt.Sprintf("%s chain %s holds a rule Tether did not write (handle %d: %s)", name, c.Name, rl.Handle, describeRule(rl)))
			}
		}
	}
	return append(out, r.setDiff(name, fam, t)...)
}

// setDiff: every firewalled network's bridge in set bridges, every
// internal one's in set internal.
func (r *run) setDiff(name, fam string, t *Table) []string {
	var out []string
	for _, n := range r.st.Networks {
		if !n.Firewalled || n.Bridge == "" {
			continue
		}
		if !slices.Contains(t.Sets["bridges"], n.Bridge) {
			out = append(out, fmt.Sprintf("%s set bridges lacks %q (network %s): its isolation from other networks is gone", name, n.Bridge, n.Name))
		}
		if n.Internal && !slices.Contains(t.Sets["internal"], n.Bridge) {
			out = append(out, fmt.Sprintf("%s set internal lacks %q (network %s): the internal network is open", name, n.Bridge, n.Name))
		}
	}
	return out
}
