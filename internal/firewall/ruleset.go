package firewall

// The ruleset, as `nft list table ip tether` prints it:
//
//	table ip tether {
//		set bridges { type ifname }                 # every Tether bridge
//		set same_bridge { type ifname . ifname }    # br . br for every bridge
//		set internal { type ifname }                # bridges of internal networks
//		set masq { type ipv4_addr; flags interval } # masqueraded subnets
//		set unprotected { type ifname }             # bridges in gateway mode nat-unprotected
//		set routed { type ifname }                  # bridges in gateway mode routed
//		set trusted { type ifname . ifname }        # trusted host interface . bridge
//		set published { ipv4_addr . inet_proto . inet_service } # sandbox ends of published ports
//		chain raw_prerouting {
//			type filter hook prerouting priority raw; policy accept;
//			iifname != "lo" ip daddr 127.0.0.0/8 drop
//		}
//		chain forward {
//			type filter hook forward priority filter; policy accept;
//			iifname . oifname @same_bridge accept
//			iifname @internal drop
//			oifname @internal drop
//			ct status dnat accept                   # published ports
//			oifname @routed ip daddr . meta l4proto . th dport @published accept
//			iifname @bridges oifname @bridges drop
//			oifname @bridges ct state established,related accept
//			oifname @unprotected accept
//			oifname @routed meta l4proto icmp accept
//			iifname . oifname @trusted ip daddr . meta l4proto . th dport @published accept
//			oifname @bridges ip daddr . meta l4proto . th dport @published accept # AllowDirectRouting only
//			oifname @bridges drop                   # no direct routing
//		}
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			ip saddr @masq oifname != @bridges masquerade
//			ct status dnat ip saddr @masq oifname @bridges masquerade # hairpin
//			ip saddr 127.0.0.0/8 oifname @bridges masquerade # LoopbackDNAT only
//		}
//		map ports, map ports_any                    # published ports, see ports.go
//		chain prerouting {                          # nat, dstnat
//			fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @ports
//			fib daddr type local dnat ip to meta l4proto . th dport map @ports_any
//		}
//		chain output { same, after `ip daddr != 127.0.0.0/8` unless LoopbackDNAT }
//	}
//
// Why this shape: the chains and rules never change; a network is only set
// elements (one per set it belongs to), so adding the 100th network is the
// same few-element batch as adding the first, and a packet costs the same
// hash or tree lookups however many networks exist.
//
// The forward chain only drops; its accepts end Tether's chain, not the
// packet's path (every base chain on the hook must accept). The first rule
// exists for br_netfilter: with it loaded, traffic between two ports of one
// bridge passes the IPv4 forward hook with the bridge as both input and
// output interface, and must not be taken for traffic between networks.
// Traffic of a sandbox on two networks is never routed by the host, so it
// is not affected. icc=false is not here: it is the bridge port "isolated"
// flag, set by the bridge driver.
//
// Direct routing (Docker 28's gateway modes): a packet entering a bridge
// from a non-Tether interface that no DNAT of a published host port
// produced and that is no reply is dropped by the last rule, unless the
// network's gateway mode, a trusted interface or allow-direct-routing opens
// it; what they open is the published ports' sandbox ends (set published),
// never an unpublished port (nat-unprotected opens everything).
//
// raw_prerouting runs before conntrack and NAT (moby#45610, the
// CVE-2020-8558 class): a packet for 127.0.0.0/8 that did not come in on
// lo came from another machine or a sandbox that routes loopback to the
// host; without the drop, prerouting DNAT would send it to a port
// published on 127.0.0.1, and route_localnet=1 on a bridge would deliver it
// to host services bound to loopback.
//
// IPv6 (Options.IPv6, the daemon's ip6tables): a second table, `ip6
// tether`, with the same sets, chains and rules in IPv6 terms (ipv6_addr
// keys, `ip6 saddr`/`ip6 daddr`, `dnat ip6 to`, ICMPv6 for routed
// networks) and two differences:
//
//	raw_prerouting: iifname != "lo" ip6 daddr ::1 drop
//	output: always after `ip6 daddr != ::1` (no LoopbackDNAT for IPv6: the
//	        kernel never routes ::1 off lo; the userland proxy serves [::1])
//	postrouting: no loopback masquerade
//	chain input { type filter hook input priority filter; policy accept;
//		iifname @bridges icmpv6 type nd-router-advert counter drop }
//
// The last one: sandboxes and bridges run with accept_ra=0, so a router
// advertisement from a sandbox changes nothing on the host today; the drop
// keeps it so if a bridge's accept_ra is ever turned on by hand or by a
// distribution default (a sandbox must never configure the host).
//
// Why two tables and not one `inet tether`: an inet table would hold both
// families' rules with the same sets, but `ip tether` must stay byte for
// byte as it is (live hosts' tables must not be rebuilt on upgrade, and
// ip6tables=false must leave IPv6 alone), and every rule that names an
// address (masq, published, ports, the loopback drop) would still need an
// IPv4 and an IPv6 variant with sets of each address type. Two tables of
// one layout, built by the same functions with a family parameter, keep
// the code one copy and the ip table unchanged. Both are written in one
// netlink batch, so they change together atomically.
//
// A network without an IPv6 subnet (Subnet6 zero) has IPv6 turned off on
// its bridge, so no IPv6 can flow through it. In the ip6 table it still
// gets its bridge in bridges, same_bridge (and internal): should IPv6 ever
// come up on that bridge, the forward chain keeps it closed to other
// networks and to direct routing. It gets nothing that opens anything
// (masq, unprotected, routed, trusted).

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/netaddr"
)

// TableName is the name of Tether's nftables tables (family ip, and ip6
// with Options.IPv6).
const TableName = "tether"

// Set and chain names.
const (
	SetBridges      = "bridges"
	SetSameBridge   = "same_bridge"
	SetInternal     = "internal"
	SetMasq         = "masq"
	MapPorts        = "ports"     // published ports bound to one host address
	MapPortsAny     = "ports_any" // published ports bound to 0.0.0.0
	SetUnprotected  = "unprotected"
	SetRouted       = "routed"
	SetTrusted      = "trusted"
	SetPublished    = "published" // sandbox address . protocol . port of published ports
	ChainRaw        = "raw_prerouting"
	ChainForward    = "forward"
	ChainPostroute  = "postrouting"
	ChainPrerouting = "prerouting"
	ChainOutput     = "output"
	ChainInput      = "input" // ip6 table only: router advertisements from bridges
)

const ifNameLen = 16 // IFNAMSIZ: an ifname set key is the name, NUL-padded

var ifPair = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIFName)

// family is one of Tether's two tables, ip tether and ip6 tether: what
// differs between their sets and rules.
type family struct {
	nf     nftables.TableFamily
	name   string // as nft names the family: "ip", "ip6"
	prefix string // of this table's set names in entries: "" for ip, "ip6 " for ip6
	addr   nftables.SetDatatype
	alen   uint32 // address length in bytes
	saddr  uint32 // offset of the source address in the network header
	daddr  uint32 // offset of the destination address
	nat    uint32 // NFPROTO_IPV4 or NFPROTO_IPV6
	icmp   byte   // IPPROTO_ICMP or IPPROTO_ICMPV6
	// ports map key and value types, set published's key type
	portsKey, portsVal nftables.SetDatatype
}

var (
	fam4 = &family{nf: nftables.TableFamilyIPv4, name: "ip", addr: nftables.TypeIPAddr, alen: 4, saddr: 12, daddr: 16,
		nat: unix.NFPROTO_IPV4, icmp: unix.IPPROTO_ICMP, portsKey: portsKey, portsVal: portsVal}
	fam6 = &family{nf: nftables.TableFamilyIPv6, name: "ip6", prefix: "ip6 ", addr: nftables.TypeIP6Addr, alen: 16, saddr: 8, daddr: 24,
		nat: unix.NFPROTO_IPV6, icmp: unix.IPPROTO_ICMPV6, portsKey: portsKey6, portsVal: portsVal6}
)

// familyOf is the family of table t (fam4 unless t is an ip6 table).
func familyOf(t *nftables.Table) *family {
	if t.Family == nftables.TableFamilyIPv6 {
		return fam6
	}
	return fam4
}

// addrFamily is the table an address belongs in.
func addrFamily(a netip.Addr) *family {
	if a.Is6() && !a.Is4In6() {
		return fam6
	}
	return fam4
}

func (fm *family) table() *nftables.Table { return &nftables.Table{Name: TableName, Family: fm.nf} }

// key is the entries key of set name in this family's table.
func (fm *family) key(set string) string { return fm.prefix + set }

// loopback is the family's loopback destination as a rule matches it:
// 127.0.0.0/8 (the first byte of the address) or ::1 (the whole address).
func (fm *family) loopback() (*expr.Payload, []byte) {
	if fm == fam6 {
		return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fm.daddr, Len: 16},
			netip.IPv6Loopback().AsSlice()
	}
	return firstByte(16), []byte{127}
}

// subnet is n's subnet in this family (zero if it has none).
func (fm *family) subnet(n Network) netip.Prefix {
	if fm == fam6 {
		if n.Subnet6.IsValid() && n.Subnet6.Addr().Is6() && !n.Subnet6.Addr().Is4In6() {
			return n.Subnet6.Masked()
		}
		return netip.Prefix{}
	}
	if n.Subnet.IsValid() && n.Subnet.Addr().Is4() {
		return n.Subnet.Masked()
	}
	return netip.Prefix{}
}

func table() *nftables.Table { return fam4.table() }

// sets returns the set definitions of table t (fresh structs: AddSet writes
// IDs). The host byte order of the ifname sets only tells `nft list` how
// to print their elements (as strings).
func sets(t *nftables.Table) []*nftables.Set {
	fm := familyOf(t)
	portsKey, portsVal := fm.portsKey, fm.portsVal
	return []*nftables.Set{
		{Table: t, Name: SetBridges, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian,
			Comment: "bridges of all Tether networks"},
		{Table: t, Name: SetSameBridge, KeyType: ifPair, Comment: "bridge . bridge: traffic that stays on its bridge"},
		{Table: t, Name: SetInternal, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian,
			Comment: "bridges of internal networks"},
		{Table: t, Name: SetMasq, KeyType: fm.addr, Interval: true, Comment: "subnets masqueraded on the way out"},
		{Table: t, Name: MapPorts, KeyType: portsKey, IsMap: true, DataType: portsVal,
			Comment: "published ports on one host address"},
		{Table: t, Name: MapPortsAny, KeyType: portsAnyKey, IsMap: true, DataType: portsVal,
			Comment: "published ports on every host address"},
		{Table: t, Name: SetUnprotected, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian,
			Comment: "bridges in gateway mode nat-unprotected: open to direct routing"},
		{Table: t, Name: SetRouted, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian,
			Comment: "bridges in gateway mode routed: published ports open to direct routing"},
		{Table: t, Name: SetTrusted, KeyType: ifPair,
			Comment: "host interface . bridge: published ports open to direct routing from that interface"},
		{Table: t, Name: SetPublished, KeyType: portsKey,
			Comment: "sandbox address . protocol . port of every published port"},
	}
}

func chains(t *nftables.Table) []*nftables.Chain {
	accept := nftables.ChainPolicyAccept
	cs := []*nftables.Chain{
		{Name: ChainRaw, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting,
			Priority: nftables.ChainPriorityRaw, Policy: &accept},
		{Name: ChainForward, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward,
			Priority: nftables.ChainPriorityFilter, Policy: &accept},
		{Name: ChainPostroute, Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting,
			Priority: nftables.ChainPriorityNATSource, Policy: &accept},
		{Name: ChainPrerouting, Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting,
			Priority: nftables.ChainPriorityNATDest, Policy: &accept},
		{Name: ChainOutput, Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookOutput,
			Priority: nftables.ChainPriorityNATDest, Policy: &accept},
	}
	if familyOf(t) == fam6 {
		cs = append(cs, &nftables.Chain{Name: ChainInput, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	}
	return cs
}

// ruleSpec is one static rule; its comment names it in `nft list` output and
// in the layout check at start.
type ruleSpec struct {
	chain   string
	comment string
	exprs   []expr.Any
}

// rules returns the static rules with Options.LoopbackDNAT = loopback and
// the other options off.
func rules(loopback bool) []ruleSpec { return rulesFor(Options{LoopbackDNAT: loopback}) }

// rulesFor returns the static rules of table ip tether for options o.
func rulesFor(o Options) []ruleSpec { return rulesOf(fam4, o) }

// rulesOf returns the static rules of family fm's table for options o.
func rulesOf(fm *family, o Options) []ruleSpec {
	loopbackDNAT := o.LoopbackDNAT && fm == fam4
	rs := []ruleSpec{loopbackRule(fm)}
	rs = append(rs, forwardRules(fm, o.AllowDirectRouting)...)
	rs = append(rs, postroutingRules(fm, loopbackDNAT)...)
	for _, ch := range []string{ChainPrerouting, ChainOutput} {
		var skip []expr.Any
		if ch == ChainOutput && !loopbackDNAT {
			load, lo := fm.loopback()
			skip = []expr.Any{load, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: lo}}
		}
		rs = append(rs,
			ruleSpec{ch, "tether: published ports on one host address", cat(skip, dnatMap(fm, MapPorts))},
			ruleSpec{ch, "tether: published ports on every host address", cat(skip, dnatMap(fm, MapPortsAny))})
	}
	if fm == fam6 {
		rs = append(rs, routerAdvertRule())
	}
	return rs
}

// loopbackRule is `iifname != "lo" ip daddr 127.0.0.0/8 drop` (ip6:
// `ip6 daddr ::1`) in raw_prerouting, before conntrack and DNAT.
func loopbackRule(fm *family) ruleSpec {
	load, lo := fm.loopback()
	return ruleSpec{ChainRaw, "tether: loopback addresses are reachable from lo only", []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname("lo")},
		load, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: lo},
		&expr.Verdict{Kind: expr.VerdictDrop}}}
}

// routerAdvertRule is `iifname @bridges icmpv6 type nd-router-advert
// counter drop` in the ip6 table's input chain: a sandbox never configures
// the host. The counter shows in `nft list` what was dropped.
func routerAdvertRule() ruleSpec {
	return ruleSpec{ChainInput, "tether: no router advertisements from sandboxes", []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: SetBridges},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{134 /* ND_ROUTER_ADVERT */}},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop}}}
}

// forwardRules are the forward chain's rules; allowDirect is
// Options.AllowDirectRouting.
func forwardRules(fm *family, allowDirect bool) []ruleSpec {
	iif := &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}
	oif := &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}
	in := func(set string) *expr.Lookup { return &expr.Lookup{SourceRegister: 1, SetName: set} }
	drop := &expr.Verdict{Kind: expr.VerdictDrop}
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	pair := func(set string) []expr.Any {
		return []expr.Any{iif, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 2}, in(set)}
	}
	rs := []ruleSpec{
		{ChainForward, "tether: traffic that stays on its bridge (br_netfilter)", cat(pair(SetSameBridge), accept)},
		{ChainForward, "tether: nothing leaves an internal network", []expr.Any{iif, in(SetInternal), drop}},
		{ChainForward, "tether: nothing enters an internal network", []expr.Any{oif, in(SetInternal), drop}},
		{ChainForward, "tether: published ports are reachable from other networks", cat(ctDNAT(), accept)},
		{ChainForward, "tether: published ports of routed networks are open to direct routing",
			cat(oif, in(SetRouted), publishedDest(fm), accept)},
		{ChainForward, "tether: no traffic between networks", []expr.Any{iif, in(SetBridges), oif, in(SetBridges), drop}},
		{ChainForward, "tether: replies to what sandboxes started", cat(oif, in(SetBridges),
			ctBits(expr.CtKeySTATE, 0x02|0x04 /* established, related */), accept)},
		{ChainForward, "tether: nat-unprotected networks are open to direct routing", []expr.Any{oif, in(SetUnprotected), accept}},
		{ChainForward, "tether: ICMP into routed networks", []expr.Any{oif, in(SetRouted),
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fm.icmp}}, accept}},
		{ChainForward, "tether: published ports are open to direct routing from trusted interfaces",
			cat(pair(SetTrusted), publishedDest(fm), accept)},
	}
	if allowDirect {
		rs = append(rs, ruleSpec{ChainForward, "tether: published ports are open to direct routing (allow-direct-routing)",
			cat(oif, in(SetBridges), publishedDest(fm), accept)})
	}
	return append(rs, ruleSpec{ChainForward, "tether: nothing else enters a network from outside (direct routing)",
		[]expr.Any{oif, in(SetBridges), drop}})
}

// postroutingRules are the postrouting chain's rules; loopback is
// Options.LoopbackDNAT.
func postroutingRules(fm *family, loopback bool) []ruleSpec {
	oif := &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}
	in := func(set string) *expr.Lookup { return &expr.Lookup{SourceRegister: 1, SetName: set} }
	saddr := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fm.saddr, Len: fm.alen}
	rs := []ruleSpec{
		{ChainPostroute, "tether: outbound NAT", []expr.Any{saddr, in(SetMasq),
			oif, &expr.Lookup{SourceRegister: 1, SetName: SetBridges, Invert: true}, &expr.Masq{}}},
		{ChainPostroute, "tether: hairpin to a published port", cat(ctDNAT(), saddr, in(SetMasq), oif, in(SetBridges), &expr.Masq{})},
	}
	if loopback {
		rs = append(rs, ruleSpec{ChainPostroute, "tether: loopback to a published port", []expr.Any{
			firstByte(12), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}},
			oif, in(SetBridges), &expr.Masq{}}})
	}
	return rs
}

// publishedDest is `ip daddr . meta l4proto . th dport @published`: the
// packet goes to the sandbox end of a published port.
func publishedDest(fm *family) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg(0), Base: expr.PayloadBaseNetworkHeader, Offset: fm.daddr, Len: fm.alen},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg(fm.alen / 4)},
		&expr.Payload{DestRegister: reg(fm.alen/4 + 1), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: SetPublished},
	}
}

// reg names the register of the field at 32-bit word w of a concatenation
// that starts in NFT_REG_1, as the kernel reports it back: a field on a
// 16-byte boundary by its 128-bit register (1, 2, ...), any other by its
// 32-bit one (NFT_REG32_00 is 8). ipv4: address 1, protocol 9, port 10;
// ipv6: address 1, protocol 2, port 13.
func reg(w uint32) uint32 {
	if w%4 == 0 {
		return 1 + w/4
	}
	return 8 + w
}

// cat joins expressions and expression lists into one rule body.
func cat(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch p := p.(type) {
		case []expr.Any:
			out = append(out, p...)
		case expr.Any:
			out = append(out, p)
		}
	}
	return out
}

// ctDNAT matches packets of connections whose destination was NATed:
// `ct status dnat`.
func ctDNAT() []expr.Any { return ctBits(expr.CtKeySTATUS, 0x20 /* IPS_DST_NAT */) }

// ctBits matches packets whose conntrack key (status or state) has any of
// the bits of mask set: `ct status dnat`, `ct state established,related`.
func ctBits(key expr.CtKey, mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: key},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// firstByte loads the first byte of the address at offset (12 saddr, 16
// daddr): `ip saddr 127.0.0.0/8` is that byte equal to 127.
func firstByte(offset uint32) *expr.Payload {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 1}
}

// dnatMap is `fib daddr type local dnat ip to KEY map @m` (ip6: `dnat ip6
// to`), KEY being `ip daddr . meta l4proto . th dport` for ports and `meta
// l4proto . th dport` for ports_any. A miss ends the rule without a
// verdict. The value (address . port) lands in NFT_REG_1 on: the address
// first, the port in the word after it.
func dnatMap(fm *family, m string) []expr.Any {
	out := []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
	w := uint32(0) // 32-bit word of the key being loaded
	if m == MapPorts {
		out = append(out, &expr.Payload{DestRegister: reg(0), Base: expr.PayloadBaseNetworkHeader, Offset: fm.daddr, Len: fm.alen})
		w = fm.alen / 4
	}
	port := reg(fm.alen / 4)
	out = append(out,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg(w)},
		&expr.Payload{DestRegister: reg(w + 1), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: m},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: fm.nat,
			RegAddrMin: 1, RegAddrMax: 1, RegProtoMin: port, RegProtoMax: port, Specified: true})
	return out
}

func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }

// entries is the content of the sets as the firewall reasons about it: per
// set, an identity ("tth-1", "tth-1 . tth-1", "10.1.0.0/24") mapped to the
// kernel elements that make it up (two for a subnet: start and end).
type entries map[string]map[string][]nftables.SetElement

func (e entries) put(set, id string, els ...nftables.SetElement) {
	if e[set] == nil {
		e[set] = map[string][]nftables.SetElement{}
	}
	e[set][id] = els
}

// ids lists a set's identities, sorted (for tests and messages).
func (e entries) ids(set string) []string {
	var out []string
	for id := range e[set] {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// entriesOf returns the entries of table ip tether for the given networks.
func entriesOf(nets ...Network) entries { return familyEntries(fam4, nets...) }

// familyEntries returns the entries of family fm's table for the given
// networks, keyed by fm.key(set). In the ip6 table a network without an
// IPv6 subnet only gets its bridge in the sets that close it (see the file
// comment).
func familyEntries(fm *family, nets ...Network) entries {
	e := entries{}
	for _, n := range nets {
		if n.Bridge == "" {
			continue
		}
		br := nftables.SetElement{Key: ifname(n.Bridge)}
		e.put(fm.key(SetBridges), n.Bridge, br)
		e.put(fm.key(SetSameBridge), n.Bridge+" . "+n.Bridge, nftables.SetElement{Key: append(ifname(n.Bridge), ifname(n.Bridge)...)})
		if n.Internal {
			e.put(fm.key(SetInternal), n.Bridge, br)
			continue
		}
		sub := fm.subnet(n)
		if fm == fam6 && !sub.IsValid() {
			continue
		}
		if n.Masquerade && n.Mode != ModeRouted && sub.IsValid() {
			e.put(fm.key(SetMasq), sub.String(), prefixElements(sub)...)
		}
		switch n.Mode {
		case ModeNATUnprotected:
			e.put(fm.key(SetUnprotected), n.Bridge, br)
		case ModeRouted:
			e.put(fm.key(SetRouted), n.Bridge, br)
		}
		for _, i := range n.Trusted {
			e.put(fm.key(SetTrusted), i+" . "+n.Bridge, nftables.SetElement{Key: append(ifname(i), ifname(n.Bridge)...)})
		}
	}
	return e
}

// merge adds o's entries to e.
func (e entries) merge(o entries) entries {
	for set, ids := range o {
		for id, els := range ids {
			e.put(set, id, els...)
		}
	}
	return e
}

func ifname(s string) []byte {
	b := make([]byte, ifNameLen)
	copy(b, s)
	return b
}

func ifnameString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// prefixElements encodes a subnet as an interval: its first address, and
// the first address after it flagged as interval end (none when the subnet
// reaches the top of the address space, 255.255.255.255 or ffff:...:ffff).
func prefixElements(p netip.Prefix) []nftables.SetElement {
	p = p.Masked()
	els := []nftables.SetElement{{Key: p.Addr().AsSlice()}}
	if end := netaddr.Last(p).Next(); end.IsValid() {
		els = append(els, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
	}
	return els
}

// parseElements turns a set's kernel elements back into entries.
func parseElements(set string, els []nftables.SetElement) map[string][]nftables.SetElement {
	out := map[string][]nftables.SetElement{}
	switch set {
	case SetMasq:
		for _, r := range intervals(els) {
			out[r.id()] = r.elements
		}
	case MapPorts, MapPortsAny:
		for _, el := range els {
			if p, ok := parsePort(set, el); ok {
				out[elementID(p)] = []nftables.SetElement{el}
			}
		}
	case SetPublished:
		for _, el := range els {
			if p, ok := parsePublished(el); ok {
				out[publishedID(p)] = []nftables.SetElement{el}
			}
		}
	case SetSameBridge, SetTrusted:
		for _, el := range els {
			if len(el.Key) == 2*ifNameLen {
				out[ifnameString(el.Key[:ifNameLen])+" . "+ifnameString(el.Key[ifNameLen:])] = []nftables.SetElement{el}
			}
		}
	default:
		for _, el := range els {
			out[ifnameString(el.Key)] = []nftables.SetElement{el}
		}
	}
	return out
}

// interval is one range of an interval set: [start, end), end invalid
// meaning "to the top of the address space".
type interval struct {
	start, end netip.Addr
	elements   []nftables.SetElement
}

// id names the range as a prefix when it is one, else as "a-b".
func (r interval) id() string {
	last := netaddr.Last(netip.PrefixFrom(r.start, 0))
	if r.end.IsValid() {
		last = r.end.Prev()
	}
	for bits := 0; bits <= r.start.BitLen(); bits++ {
		if p := netip.PrefixFrom(r.start, bits); p.Masked().Addr() == r.start && netaddr.Last(p) == last {
			return p.String()
		}
	}
	end := r.end
	if !end.IsValid() {
		end = netip.IPv4Unspecified()
		if r.start.Is6() {
			end = netip.IPv6Unspecified()
		}
	}
	return fmt.Sprintf("%s-%s", r.start, end)
}

// intervals pairs the start and end elements the kernel returns (in no
// promised order). Sorted by key with ends before starts at equal keys,
// a start is followed by its end; a start followed by another start (or by
// nothing) runs to the top of the address space. An end with no start
// before it (the 0.0.0.0 end the nft tool adds) is no range. Keys are
// IPv4 or IPv6 addresses.
func intervals(els []nftables.SetElement) []interval {
	els = slices.Clone(els)
	slices.SortFunc(els, func(a, b nftables.SetElement) int {
		if c := bytes.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		return cmp.Compare(boolInt(!a.IntervalEnd), boolInt(!b.IntervalEnd))
	})
	var out []interval
	for i := 0; i < len(els); i++ {
		start, ok := netip.AddrFromSlice(els[i].Key)
		if els[i].IntervalEnd || !ok {
			continue
		}
		r := interval{start: start, elements: []nftables.SetElement{els[i]}}
		if i+1 < len(els) && els[i+1].IntervalEnd {
			i++
			r.end, _ = netip.AddrFromSlice(els[i].Key)
			r.elements = append(r.elements, els[i])
		}
		out = append(out, r)
	}
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// String prints entries for messages: "bridges=[a b] masq=[10.1.0.0/24]",
// then the ip6 table's sets that hold anything: "ip6 masq=[fd00::/64]".
func (e entries) String() string {
	var parts []string
	for _, fm := range []*family{fam4, fam6} {
		for _, s := range []string{SetBridges, SetSameBridge, SetInternal, SetMasq, MapPorts, MapPortsAny,
			SetUnprotected, SetRouted, SetTrusted, SetPublished} {
			if k := fm.key(s); fm == fam4 || len(e[k]) > 0 {
				parts = append(parts, fmt.Sprintf("%s=[%s]", k, strings.Join(e.ids(k), " ")))
			}
		}
	}
	return strings.Join(parts, " ")
}
