package doctor

// Reading nftables chains and rules (as google/nftables returns them) into
// the doctor's Chain and Rule: interface and source/destination address
// matches and the verdict, everything else marked Other.

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprintf("family-%d", f)
}

func familyOf(name string) (nftables.TableFamily, bool) {
	for _, f := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6, nftables.TableFamilyINet,
		nftables.TableFamilyBridge, nftables.TableFamilyARP, nftables.TableFamilyNetdev} {
		if familyName(f) == name {
			return f, true
		}
	}
	return 0, false
}

var hookNames = []string{"prerouting", "input", "forward", "output", "postrouting"}

// chainOf converts a chain and its rules; a regular (non-base) chain has
// Hook "".
func chainOf(ch *nftables.Chain, rs []*nftables.Rule) Chain {
	c := Chain{Family: familyName(ch.Table.Family), Table: ch.Table.Name, Name: ch.Name, Type: string(ch.Type), Policy: "accept"}
	if ch.Hooknum != nil && int(*ch.Hooknum) < len(hookNames) {
		c.Hook = hookNames[*ch.Hooknum]
	}
	if ch.Priority != nil {
		c.Priority = int(*ch.Priority)
	}
	if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
		c.Policy = "drop"
	}
	for _, r := range rs {
		c.Rules = append(c.Rules, ruleOf(r, ch.Table.Family))
	}
	return c
}

// loaded is what a register holds while a rule is read.
type loaded struct {
	what string // "iif", "oif", "src", "dst", "nfproto", "ct", "other"
	mask []byte // a bitwise mask applied to it
	alen int    // "src", "dst": the address length (4 or 16)
}

// ruleOf reads a rule's matches and verdict.
func ruleOf(r *nftables.Rule, fam nftables.TableFamily) Rule {
	out := Rule{Handle: r.Handle}
	out.Comment, _ = userdata.GetString(r.UserData, userdata.TypeComment)
	regs := map[uint32]*loaded{}
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Meta:
			regs[e.Register] = &loaded{what: metaWhat(e.Key)}
		case *expr.Payload:
			what, alen := payloadWhat(e, fam)
			regs[e.DestRegister] = &loaded{what: what, alen: alen}
		case *expr.Ct:
			regs[e.Register] = &loaded{what: "ct"}
		case *expr.Bitwise:
			if l := regs[e.SourceRegister]; l != nil {
				regs[e.DestRegister] = &loaded{what: l.what, mask: e.Mask, alen: l.alen}
			}
		case *expr.Cmp:
			out.cmp(regs[e.Register], e)
		case *expr.Counter, *expr.Log:
		case *expr.Verdict:
			out.Verdict = verdictName(e.Kind)
		case *expr.Reject:
			out.Verdict = "reject"
		case *expr.Target: // iptables-nft's -j TARGET through x_tables
			if e.Name == "REJECT" {
				out.Verdict = "reject"
			} else {
				out.Other = true
			}
		default:
			out.Other = true
		}
	}
	return out
}

func metaWhat(k expr.MetaKey) string {
	switch k {
	case expr.MetaKeyIIFNAME:
		return "iif"
	case expr.MetaKeyOIFNAME:
		return "oif"
	case expr.MetaKeyNFPROTO:
		return "nfproto"
	}
	return "other"
}

// payloadWhat: the source or destination address in the network header,
// or its first bytes (nft loads only the bytes a prefix on a byte boundary
// needs: `ip saddr 10.0.0.0/24` loads 3), and the address length.
func payloadWhat(p *expr.Payload, fam nftables.TableFamily) (string, int) {
	if p.Base != expr.PayloadBaseNetworkHeader || p.Len == 0 {
		return "other", 0
	}
	v4, v6 := fam != nftables.TableFamilyIPv6, fam != nftables.TableFamilyIPv4
	switch {
	case v4 && p.Offset == 12 && p.Len <= 4:
		return "src", 4
	case v4 && p.Offset == 16 && p.Len <= 4:
		return "dst", 4
	case v6 && p.Offset == 8 && p.Len <= 16:
		return "src", 16
	case v6 && p.Offset == 24 && p.Len <= 16:
		return "dst", 16
	}
	return "other", 0
}

func verdictName(k expr.VerdictKind) string {
	switch k {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictJump:
		return "jump"
	case expr.VerdictGoto:
		return "goto"
	case expr.VerdictReturn:
		return "return"
	}
	return ""
}

// cmp records an equality match on what l holds.
func (r *Rule) cmp(l *loaded, c *expr.Cmp) {
	if l == nil {
		r.Other = true
		return
	}
	if l.what == "nfproto" {
		r.nfproto(c)
		return
	}
	if l.what == "ct" {
		r.CtState = true
		return
	}
	if c.Op != expr.CmpOpEq {
		r.Other = true
		return
	}
	switch l.what {
	case "iif":
		r.IIF = ifnameMatch(c.Data)
	case "oif":
		r.OIF = ifnameMatch(c.Data)
	case "src", "dst":
		p, ok := prefixOf(c.Data, l.mask, l.alen)
		if !ok {
			r.Other = true
		} else if l.what == "src" {
			r.Src = p
		} else {
			r.Dst = p
		}
	default:
		r.Other = true
	}
}

// ifnameMatch: a NUL-terminated name matches exactly; without the NUL it is
// a prefix (iptables' "br+"), written "br*".
func ifnameMatch(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return string(b[:i])
	}
	return string(b) + "*"
}

func ifMatches(pattern, name string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(name, p)
	}
	return pattern == name
}

// prefixOf is the prefix the first bytes of an address of length alen,
// compared under a mask, stand for.
func prefixOf(data, mask []byte, alen int) (netip.Prefix, bool) {
	if len(data) > alen {
		return netip.Prefix{}, false
	}
	full := make([]byte, alen)
	copy(full, data)
	a, ok := netip.AddrFromSlice(full)
	if !ok {
		return netip.Prefix{}, false
	}
	bits := len(data) * 8
	if mask != nil {
		bits = 0
		for _, m := range mask {
			for i := 7; i >= 0 && m&(1<<i) != 0; i-- {
				bits++
			}
			if m != 0xff {
				break
			}
		}
	}
	return netip.PrefixFrom(a, bits).Masked(), true
}

// ifnameElements reads the keys of an ifname set as names.
func ifnameElements(els []nftables.SetElement) []string {
	var out []string
	for _, e := range els {
		out = append(out, string(bytes.TrimRight(e.Key, "\x00")))
	}
	return out
}

// addrElements reads the keys of an address set as addresses.
func addrElements(els []nftables.SetElement) []string {
	var out []string
	for _, e := range els {
		if a, ok := netip.AddrFromSlice(e.Key); ok {
			out = append(out, a.Unmap().String())
		}
	}
	return out
}

// nfproto records `meta nfproto ipv4|ipv6` (inet tables).
func (r *Rule) nfproto(c *expr.Cmp) {
	switch {
	case c.Op != expr.CmpOpEq || len(c.Data) != 1:
		r.Other = true
	case c.Data[0] == unix.NFPROTO_IPV4:
		r.NFProto = "ipv4"
	case c.Data[0] == unix.NFPROTO_IPV6:
		r.NFProto = "ipv6"
	default:
		r.Other = true
	}
}
