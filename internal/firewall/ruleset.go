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

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// TableName is the name of Tether's nftables table (family ip).
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
)

const ifNameLen = 16 // IFNAMSIZ: an ifname set key is the name, NUL-padded

var ifPair = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIFName)

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
}

// sets returns the set definitions (fresh structs: AddSet writes IDs). The
// host byte order of the ifname sets only tells `nft list` how to print
// their elements (as strings).
func sets(t *nftables.Table) []*nftables.Set {
	return []*nftables.Set{
		{Table: t, Name: SetBridges, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian,
			Comment: "bridges of all Tether networks"},
		{Table: t, Name: SetSameBridge, KeyType: ifPair, Comment: "bridge . bridge: traffic that stays on its bridge"},
		{Table: t, Name: SetInternal, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian,
			Comment: "bridges of internal networks"},
		{Table: t, Name: SetMasq, KeyType: nftables.TypeIPAddr, Interval: true, Comment: "subnets masqueraded on the way out"},
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
	return []*nftables.Chain{
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

// rulesFor returns the static rules for options o.
func rulesFor(o Options) []ruleSpec {
	rs := []ruleSpec{loopbackRule()}
	rs = append(rs, forwardRules(o.AllowDirectRouting)...)
	rs = append(rs, postroutingRules(o.LoopbackDNAT)...)
	for _, ch := range []string{ChainPrerouting, ChainOutput} {
		var skip []expr.Any
		if ch == ChainOutput && !o.LoopbackDNAT {
			skip = []expr.Any{firstByte(16), &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{127}}}
		}
		rs = append(rs,
			ruleSpec{ch, "tether: published ports on one host address", cat(skip, dnatMap(MapPorts))},
			ruleSpec{ch, "tether: published ports on every host address", cat(skip, dnatMap(MapPortsAny))})
	}
	return rs
}

// loopbackRule is `iifname != "lo" ip daddr 127.0.0.0/8 drop` in
// raw_prerouting, before conntrack and DNAT.
func loopbackRule() ruleSpec {
	return ruleSpec{ChainRaw, "tether: loopback addresses are reachable from lo only", []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname("lo")},
		firstByte(16), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}},
		&expr.Verdict{Kind: expr.VerdictDrop}}}
}

// forwardRules are the forward chain's rules; allowDirect is
// Options.AllowDirectRouting.
func forwardRules(allowDirect bool) []ruleSpec {
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
			cat(oif, in(SetRouted), publishedDest(), accept)},
		{ChainForward, "tether: no traffic between networks", []expr.Any{iif, in(SetBridges), oif, in(SetBridges), drop}},
		{ChainForward, "tether: replies to what sandboxes started", cat(oif, in(SetBridges),
			ctBits(expr.CtKeySTATE, 0x02|0x04 /* established, related */), accept)},
		{ChainForward, "tether: nat-unprotected networks are open to direct routing", []expr.Any{oif, in(SetUnprotected), accept}},
		{ChainForward, "tether: ICMP into routed networks", []expr.Any{oif, in(SetRouted),
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMP}}, accept}},
		{ChainForward, "tether: published ports are open to direct routing from trusted interfaces",
			cat(pair(SetTrusted), publishedDest(), accept)},
	}
	if allowDirect {
		rs = append(rs, ruleSpec{ChainForward, "tether: published ports are open to direct routing (allow-direct-routing)",
			cat(oif, in(SetBridges), publishedDest(), accept)})
	}
	return append(rs, ruleSpec{ChainForward, "tether: nothing else enters a network from outside (direct routing)",
		[]expr.Any{oif, in(SetBridges), drop}})
}

// postroutingRules are the postrouting chain's rules; loopback is
// Options.LoopbackDNAT.
func postroutingRules(loopback bool) []ruleSpec {
	oif := &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}
	in := func(set string) *expr.Lookup { return &expr.Lookup{SourceRegister: 1, SetName: set} }
	saddr := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
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
func publishedDest() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
		&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: SetPublished},
	}
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

// dnatMap is `fib daddr type local dnat ip to KEY map @m`, KEY being
// `ip daddr . meta l4proto . th dport` for ports and `meta l4proto . th
// dport` for ports_any. A miss ends the rule without a verdict.
func dnatMap(m string) []expr.Any {
	out := []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
	reg := uint32(1) // NFT_REG_1, i.e. the 32-bit registers 8, 9, 10, ...
	next := func() uint32 {
		r := reg
		if reg == 1 {
			reg = 9
		} else {
			reg++
		}
		return r
	}
	if m == MapPorts {
		out = append(out, &expr.Payload{DestRegister: next(), Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4})
	}
	out = append(out,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: next()},
		&expr.Payload{DestRegister: next(), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: m},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4,
			RegAddrMin: 1, RegAddrMax: 1, RegProtoMin: 9, RegProtoMax: 9, Specified: true})
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

// entriesOf returns the set entries of the given networks.
func entriesOf(nets ...Network) entries {
	e := entries{}
	for _, n := range nets {
		if n.Bridge == "" {
			continue
		}
		e.put(SetBridges, n.Bridge, nftables.SetElement{Key: ifname(n.Bridge)})
		e.put(SetSameBridge, n.Bridge+" . "+n.Bridge, nftables.SetElement{Key: append(ifname(n.Bridge), ifname(n.Bridge)...)})
		if n.Internal {
			e.put(SetInternal, n.Bridge, nftables.SetElement{Key: ifname(n.Bridge)})
			continue
		}
		if n.Masquerade && n.Mode != ModeRouted && n.Subnet.IsValid() && n.Subnet.Addr().Is4() {
			p := n.Subnet.Masked()
			e.put(SetMasq, p.String(), prefixElements(p)...)
		}
		switch n.Mode {
		case ModeNATUnprotected:
			e.put(SetUnprotected, n.Bridge, nftables.SetElement{Key: ifname(n.Bridge)})
		case ModeRouted:
			e.put(SetRouted, n.Bridge, nftables.SetElement{Key: ifname(n.Bridge)})
		}
		for _, i := range n.Trusted {
			e.put(SetTrusted, i+" . "+n.Bridge, nftables.SetElement{Key: append(ifname(i), ifname(n.Bridge)...)})
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
// reaches 255.255.255.255).
func prefixElements(p netip.Prefix) []nftables.SetElement {
	start := p.Addr().As4()
	els := []nftables.SetElement{{Key: start[:]}}
	size := uint64(1) << (32 - p.Bits())
	if end := uint64(binary.BigEndian.Uint32(start[:])) + size; end <= 0xffffffff {
		els = append(els, nftables.SetElement{Key: binary.BigEndian.AppendUint32(nil, uint32(end)), IntervalEnd: true})
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

// interval is one range of an interval set: [start, end), end 0 meaning
// "to the top of the address space".
type interval struct {
	start, end uint64
	elements   []nftables.SetElement
}

// id names the range as a prefix when it is one, else as "a-b".
func (r interval) id() string {
	size := r.end - r.start
	if r.end == 0 {
		size = 1<<32 - r.start
	}
	if size&(size-1) == 0 && r.start%size == 0 {
		bits := 32
		for s := size; s > 1; s >>= 1 {
			bits--
		}
		return netip.PrefixFrom(addr4(r.start), bits).String()
	}
	return fmt.Sprintf("%s-%s", addr4(r.start), addr4(r.end))
}

func addr4(v uint64) netip.Addr {
	return netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, uint32(v))))
}

// intervals pairs the start and end elements the kernel returns (in no
// promised order). Sorted by key with ends before starts at equal keys,
// a start is followed by its end; a start followed by another start (or by
// nothing) runs to the top of the address space. An end with no start
// before it (the 0.0.0.0 end the nft tool adds) is no range.
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
		if els[i].IntervalEnd || len(els[i].Key) != 4 {
			continue
		}
		r := interval{start: uint64(binary.BigEndian.Uint32(els[i].Key)), elements: []nftables.SetElement{els[i]}}
		if i+1 < len(els) && els[i+1].IntervalEnd {
			i++
			r.end = uint64(binary.BigEndian.Uint32(els[i].Key))
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

// String prints entries for messages: "bridges=[a b] masq=[10.1.0.0/24]".
func (e entries) String() string {
	var parts []string
	for _, s := range []string{SetBridges, SetSameBridge, SetInternal, SetMasq, MapPorts, MapPortsAny,
		SetUnprotected, SetRouted, SetTrusted, SetPublished} {
		parts = append(parts, fmt.Sprintf("%s=[%s]", s, strings.Join(e.ids(s), " ")))
	}
	return strings.Join(parts, " ")
}
