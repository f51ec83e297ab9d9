package firewall

// Coexistence with other firewalls. In nftables every base chain on a hook
// sees the packet, in priority order, and a drop in any of them is final,
// while an accept only ends its own chain. So Tether's forward chain cannot
// let its traffic through a forward chain of another table that drops by
// policy (iptables-nft's `FORWARD` with policy DROP, as Docker with
// iptables or ufw leave it) or ends in an unconditional drop or reject
// (firewalld's `filter_FORWARD`): Tether's sandboxes silently lose the
// outside and their published ports.
//
// The check finds such chains (families ip and inet, and ip6 with
// Options.IPv6, where ip6tables-nft's FORWARD with policy DROP blocks
// Tether's IPv6 traffic the same way; hook forward, type filter, any table
// but Tether's own) at start and after every nftables
// transaction (monitor.go), and logs once per change which chain blocks
// which bridges and how to fix it. With the daemon option
// forward-accept-other-tables it also inserts, at the head of each such
// chain, three rules per non-internal Tether bridge B, each commented
// "tether: ...":
//
//	iifname "B" accept                                   (sandboxes out)
//	oifname "B" ct state established,related accept      (replies)
//	oifname "B" ct status dnat accept                    (published ports)
//
// They are the only rules Tether ever writes outside its table; they are
// found again by their comment, kept in step with the bridges, and deleted
// when the option is off, the chain stops blocking, a network goes, or the
// daemon stops. Isolation and internal networks are unaffected: Tether's
// own chain drops that traffic, and a drop anywhere is final.
//
// iptables-legacy chains (x_tables) are not nftables and are not seen.

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// OptionAcceptOtherTables is the daemon option that lets Tether insert its
// accept rules into other tables' blocking forward chains.
const OptionAcceptOtherTables = "forward-accept-other-tables"

// coexistMark starts the comment of every rule Tether inserts into another
// table.
const coexistMark = "tether: "

// ruleConn is the part of *nftables.Conn the coexistence check uses.
type ruleConn interface {
	ListChainsOfTableFamily(nftables.TableFamily) ([]*nftables.Chain, error)
	GetRules(*nftables.Table, *nftables.Chain) ([]*nftables.Rule, error)
	InsertRule(*nftables.Rule) *nftables.Rule
	DelRule(*nftables.Rule) error
	Flush() error
}

// blocker is another table's forward chain that drops what it does not
// accept.
type blocker struct {
	chain *nftables.Chain
	why   string           // "policy drop" or "its last rule drops everything"
	ours  []*nftables.Rule // rules Tether inserted earlier
}

func (b blocker) name() string {
	return fmt.Sprintf("table %s %s chain %s", familyName(b.chain.Table.Family), b.chain.Table.Name, b.chain.Name)
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv6:
		return "ip6"
	}
	return fmt.Sprintf("family-%d", f)
}

// coexist holds what the last check reported, so a report is logged once.
type coexist struct {
	log    *slog.Logger
	accept bool
	ipv6   bool // check family ip6 too (Options.IPv6)
	last   string
}

func newCoexist(log *slog.Logger, accept bool) *coexist { return &coexist{log: log, accept: accept} }

// check finds the blocking chains, brings Tether's rules in them in line
// with nets (when accept is on; else it removes them), and logs what
// changed since the last check.
func (co *coexist) check(c ruleConn, nets []Network) {
	bs, others, err := findChains(c, co.ipv6)
	if err != nil {
		co.log.Warn("check other nftables tables for forward chains that drop Tether's traffic", "err", err)
		return
	}
	bridges := openBridges(nets)
	want := bridges
	if !co.accept {
		want = nil
	}
	for _, b := range bs {
		if err := syncRules(c, b.chain, b.ours, want); err != nil {
			co.log.Error("insert accept rules for Tether's bridges into "+b.name(), "err", err)
		}
	}
	for _, o := range others { // no longer blocking: nothing of ours stays
		if err := syncRules(c, o.chain, o.ours, nil); err != nil {
			co.log.Warn("remove Tether's rules from "+o.name(), "err", err)
		}
	}
	co.report(bs, bridges)
}

// removeAll deletes every rule Tether inserted into other tables (the
// daemon stops).
func (co *coexist) removeAll(c ruleConn) {
	if !co.accept {
		return
	}
	bs, others, err := findChains(c, co.ipv6)
	if err != nil {
		co.log.Warn("remove Tether's rules from other tables", "err", err)
		return
	}
	for _, b := range append(bs, others...) {
		if err := syncRules(c, b.chain, b.ours, nil); err != nil {
			co.log.Warn("remove Tether's rules from "+b.name(), "err", err)
		}
	}
}

// report logs the blocking chains when they differ from the last report.
func (co *coexist) report(bs []blocker, bridges []string) {
	var key []string
	for _, b := range bs {
		key = append(key, b.name()+" ("+b.why+")")
	}
	k := strings.Join(key, "; ") + " | " + strings.Join(bridges, " ")
	if len(bs) == 0 || len(bridges) == 0 {
		k = ""
	}
	if k == co.last {
		return
	}
	co.last = k
	switch {
	case k == "":
		co.log.Info("no other nftables table drops the forwarded traffic of Tether's bridges")
	case co.accept:
		co.log.Info("inserted accept rules for Tether's bridges (comment \""+coexistMark+"...\") into forward chains of other tables that drop forwarded traffic ("+OptionAcceptOtherTables+")",
			"chains", strings.Join(key, "; "), "bridges", strings.Join(bridges, " "))
	default:
		for _, b := range bs {
			co.log.Warn(blockMessage(b, bridges))
		}
	}
}

// blockMessage says what b blocks and the two ways to fix it.
func blockMessage(b blocker, bridges []string) string {
	var fix []string
	for _, br := range bridges {
		fix = append(fix, fmt.Sprintf(`iifname "%s" accept; oifname "%s" ct state established,related accept; oifname "%s" ct status dnat accept`, br, br, br))
	}
	return fmt.Sprintf("%s (hook forward, priority %d) drops forwarded packets (%s): sandboxes on bridges %s cannot reach the outside and their published ports are unreachable from other hosts, unless a rule in that chain accepts them. "+
		"An accept in Tether's table does not help (every base chain must accept). Fix: set daemon option %s=true (Tether inserts and removes accept rules for its bridges there), or add to that chain: %s",
		b.name(), prio(b.chain), b.why, strings.Join(bridges, ", "), OptionAcceptOtherTables, strings.Join(fix, "; "))
}

func prio(c *nftables.Chain) int32 {
	if c.Priority == nil {
		return 0
	}
	return int32(*c.Priority)
}

// openBridges are the bridges whose traffic may cross a forward chain:
// those of non-internal networks, sorted.
func openBridges(nets []Network) []string {
	var out []string
	for _, n := range nets {
		if n.Bridge != "" && !n.Internal {
			out = append(out, n.Bridge)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// findChains lists the forward filter chains of other tables in families
// ip and inet (and ip6 with ipv6): the blocking ones, and the others that
// still hold rules of ours.
func findChains(c ruleConn, ipv6 bool) (block, stale []blocker, err error) {
	fams := []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyINet}
	if ipv6 {
		fams = append(fams, nftables.TableFamilyIPv6)
	}
	for _, fam := range fams {
		chs, err := c.ListChainsOfTableFamily(fam)
		if err != nil {
			return nil, nil, fmt.Errorf("list chains of family %s: %w", familyName(fam), err)
		}
		for _, ch := range chs {
			if !forwardFilter(ch) {
				continue
			}
			rs, err := c.GetRules(ch.Table, ch)
			if err != nil {
				return nil, nil, fmt.Errorf("list rules of table %s %s chain %s: %w", familyName(fam), ch.Table.Name, ch.Name, err)
			}
			b := blocker{chain: ch, why: blocks(ch, rs), ours: ourRules(rs)}
			switch {
			case b.why != "":
				block = append(block, b)
			case len(b.ours) > 0:
				stale = append(stale, b)
			}
		}
	}
	return block, stale, nil
}

// forwardFilter: a base chain of type filter on the forward hook, in any
// table but Tether's.
func forwardFilter(ch *nftables.Chain) bool {
	if ch.Table == nil || (ch.Table.Name == TableName &&
		(ch.Table.Family == nftables.TableFamilyIPv4 || ch.Table.Family == nftables.TableFamilyIPv6)) {
		return false
	}
	return ch.Hooknum != nil && *ch.Hooknum == *nftables.ChainHookForward && ch.Type == nftables.ChainTypeFilter
}

// blocks says why chain ch drops what it does not accept ("" when it does
// not): policy drop, or a last rule (Tether's left aside) that drops or
// rejects every packet.
func blocks(ch *nftables.Chain, rs []*nftables.Rule) string {
	if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
		return "policy drop"
	}
	var last *nftables.Rule
	for _, r := range rs {
		if !isOurs(r) {
			last = r
		}
	}
	if last != nil && dropsAll(last) {
		return "its last rule drops or rejects every packet"
	}
	return ""
}

// dropsAll: the rule has no match, only counters, logging and a drop or
// reject.
func dropsAll(r *nftables.Rule) bool {
	final := false
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Counter, *expr.Log:
		case *expr.Reject:
			final = true
		case *expr.Verdict:
			if e.Kind != expr.VerdictDrop {
				return false
			}
			final = true
		default:
			return false
		}
	}
	return final
}

func commentOf(r *nftables.Rule) string {
	c, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return c
}

func isOurs(r *nftables.Rule) bool { return strings.HasPrefix(commentOf(r), coexistMark) }

func ourRules(rs []*nftables.Rule) []*nftables.Rule {
	var out []*nftables.Rule
	for _, r := range rs {
		if isOurs(r) {
			out = append(out, r)
		}
	}
	return out
}

// syncRules makes Tether's rules in chain ch (have) the accept rules of
// bridges, in one batch: stale ones deleted, missing ones inserted at the
// head of the chain. No batch when nothing differs.
func syncRules(c ruleConn, ch *nftables.Chain, have []*nftables.Rule, bridges []string) error {
	want := map[string][]expr.Any{}
	for _, br := range bridges {
		for cmt, ex := range acceptRules(br) {
			want[cmt] = ex
		}
	}
	n := 0
	for _, r := range have {
		cmt := commentOf(r)
		if _, ok := want[cmt]; ok {
			delete(want, cmt)
			continue
		}
		if err := c.DelRule(r); err != nil {
			return fmt.Errorf("delete rule %q: %w", cmt, err)
		}
		n++
	}
	for _, cmt := range sortedKeys(want) {
		c.InsertRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: want[cmt], UserData: comment(cmt)})
		n++
	}
	if n == 0 {
		return nil
	}
	return c.Flush()
}

func sortedKeys(m map[string][]expr.Any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// acceptRules are the three rules for bridge br, by comment.
func acceptRules(br string) map[string][]expr.Any {
	iif := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(br)}}
	oif := []expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(br)}}
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	return map[string][]expr.Any{
		coexistMark + "from " + br:               append(slices.Clone(iif), accept),
		coexistMark + "replies to " + br:         append(slices.Clone(oif), append(ctHas(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept)...),
		coexistMark + "published ports on " + br: append(slices.Clone(oif), append(ctHas(expr.CtKeySTATUS, 0x20 /* IPS_DST_NAT */), accept)...),
	}
}

// ctHas matches a conntrack bit field having any of bits: `ct state
// established,related`, `ct status dnat`.
func ctHas(key expr.CtKey, bits uint32) []expr.Any {
	mask := make([]byte, 4)
	binary.NativeEndian.PutUint32(mask, bits)
	return []expr.Any{
		&expr.Ct{Register: 1, Key: key},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}
