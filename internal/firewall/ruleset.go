package firewall

// The ruleset, as `nft list table ip tether` prints it:
//
//	table ip tether {
//		set bridges { type ifname }                 # every Tether bridge
//		set same_bridge { type ifname . ifname }    # br . br for every bridge
//		set internal { type ifname }                # bridges of internal networks
//		set masq { type ipv4_addr; flags interval } # masqueraded subnets
//		chain forward {
//			type filter hook forward priority filter; policy accept;
//			iifname . oifname @same_bridge accept
//			iifname @internal drop
//			oifname @internal drop
//			ct status dnat accept                   # published ports
//			iifname @bridges oifname @bridges drop
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
	}
}

func chains(t *nftables.Table) []*nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return []*nftables.Chain{
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

// rules returns the static rules; loopback is Options.LoopbackDNAT.
func rules(loopback bool) []ruleSpec {
	iif := &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}
	oif := &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}
	in := func(set string) *expr.Lookup { return &expr.Lookup{SourceRegister: 1, SetName: set} }
	drop := &expr.Verdict{Kind: expr.VerdictDrop}
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	sameBridge := []expr.Any{iif, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 2}, in(SetSameBridge)}
	rs := []ruleSpec{
		{ChainForward, "tether: traffic that stays on its bridge (br_netfilter)", cat(sameBridge, accept)},
		{ChainForward, "tether: nothing leaves an internal network", []expr.Any{iif, in(SetInternal), drop}},
		{ChainForward, "tether: nothing enters an internal network", []expr.Any{oif, in(SetInternal), drop}},
		{ChainForward, "tether: published ports are reachable from other networks", cat(ctDNAT(), accept)},
		{ChainForward, "tether: no traffic between networks", []expr.Any{iif, in(SetBridges), oif, in(SetBridges), drop}},
		{ChainPostroute, "tether: outbound NAT", []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}, in(SetMasq),
			oif, &expr.Lookup{SourceRegister: 1, SetName: SetBridges, Invert: true}, &expr.Masq{}}},
		{ChainPostroute, "tether: hairpin to a published port", cat(ctDNAT(),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}, in(SetMasq),
			oif, in(SetBridges), &expr.Masq{})},
	}
	if loopback {
		rs = append(rs, ruleSpec{ChainPostroute, "tether: loopback to a published port", []expr.Any{
			firstByte(12), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}},
			oif, in(SetBridges), &expr.Masq{}}})
	}
	for _, ch := range []string{ChainPrerouting, ChainOutput} {
		var skip []expr.Any
		if ch == ChainOutput && !loopback {
			skip = []expr.Any{firstByte(16), &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{127}}}
		}
		rs = append(rs,
			ruleSpec{ch, "tether: published ports on one host address", cat(skip, dnatMap(MapPorts))},
			ruleSpec{ch, "tether: published ports on every host address", cat(skip, dnatMap(MapPortsAny))})
	}
	return rs
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
func ctDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(0x20 /* IPS_DST_NAT */), Xor: make([]byte, 4)},
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
		} else if n.Masquerade && n.Subnet.IsValid() && n.Subnet.Addr().Is4() {
			p := n.Subnet.Masked()
			e.put(SetMasq, p.String(), prefixElements(p)...)
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
	case SetSameBridge:
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
	for _, s := range []string{SetBridges, SetSameBridge, SetInternal, SetMasq, MapPorts, MapPortsAny} {
		parts = append(parts, fmt.Sprintf("%s=[%s]", s, strings.Join(e.ids(s), " ")))
	}
	return strings.Join(parts, " ")
}
