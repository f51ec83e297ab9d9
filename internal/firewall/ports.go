package firewall

// Published ports are elements of two maps (see ruleset.go):
//
//	ports     ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
//	ports_any inet_proto . inet_service : ipv4_addr . inet_service
//
// A binding on one host address is an element of ports keyed by that
// address; a binding on 0.0.0.0 is an element of ports_any. Every binding
// also puts its sandbox end (address . protocol . port) in set published,
// which the forward chain opens to direct routing where a gateway mode,
// a trusted interface or allow-direct-routing says so; several bindings to
// one sandbox port share that element (the owner count keeps it until the
// last goes). Publishing a
// port is one element in one batch, and a packet costs one hash lookup in
// each map however many ports are published.
//
// Kernel encoding: in a concatenation every field starts on a 4-byte
// register, so the key of ports is addr(4) proto(1)+pad(3) port(2)+pad(2),
// 12 bytes; the value is addr(4) port(2)+pad(2), 8 bytes. Ports are in
// network byte order.
//
// IPv6 (Options.IPv6): the same maps and set in table ip6 tether, with
// ipv6_addr fields (key of ports 24 bytes, values 20). A mapping's table is
// its sandbox address's family; its host address must be of the same
// family (or unspecified in it: 0.0.0.0 for IPv4, :: for IPv6), since the
// kernel cannot translate between families. A mapping from an IPv6 host
// address to an IPv4 sandbox is the userland proxy's alone. A v6 mapping
// on [::1] is accepted but never matches: the output rules skip ::1 (the
// proxy serves it).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// PortMapping is one published port: traffic to HostIP:HostPort/Proto (HostIP
// unspecified/invalid = any local address) goes to SandboxIP:SandboxPort.
type PortMapping struct {
	Proto string // "tcp" or "udp"
	// HostIP: invalid, 0.0.0.0 (IPv4 sandbox) or :: (IPv6 sandbox) = every
	// local address of the sandbox address's family.
	HostIP    netip.Addr
	HostPort  uint16
	SandboxIP netip.Addr // IPv4, or IPv6 with Options.IPv6; selects the table
	// SandboxPort is the port in the sandbox.
	SandboxPort uint16
}

// ErrInvalidPort is wrapped by the errors of AddPorts and Sync for a
// mapping that cannot be published (unknown protocol, port 0, host and
// sandbox addresses of different families, IPv6 without Options.IPv6).
var ErrInvalidPort = errors.New("invalid port mapping")

var (
	portsKey    = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	portsAnyKey = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	portsVal    = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	portsKey6   = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
	portsVal6   = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService)
)

var protoNums = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP}

func protoName(n byte) string {
	for s, v := range protoNums {
		if v == n {
			return s
		}
	}
	return fmt.Sprint(n)
}

// any reports whether the mapping binds every local address.
func (p PortMapping) any() bool { return !p.HostIP.IsValid() || p.HostIP.IsUnspecified() }

// normal checks p and returns it with IPv4-mapped addresses unmapped and
// an unspecified host address made invalid (one spelling for "any"). ipv6
// is Options.IPv6: without it an IPv6 sandbox address is refused.
func (p PortMapping) normal(ipv6 bool) (PortMapping, error) {
	p.HostIP, p.SandboxIP = p.HostIP.Unmap(), p.SandboxIP.Unmap()
	if p.HostIP.IsValid() && p.HostIP.Is4() != p.SandboxIP.Is4() && p.SandboxIP.IsValid() {
		return p, fmt.Errorf("%w: %s: host and sandbox addresses are of different IP versions (the kernel cannot translate; the userland proxy can)", ErrInvalidPort, p)
	}
	if p.any() {
		p.HostIP = netip.Addr{}
	}
	switch {
	case protoNums[p.Proto] == 0:
		return p, fmt.Errorf("%w: protocol %q (want tcp or udp)", ErrInvalidPort, p.Proto)
	case p.HostPort == 0 || p.SandboxPort == 0:
		return p, fmt.Errorf("%w: %s: port 0", ErrInvalidPort, p)
	case !p.SandboxIP.IsValid() || p.SandboxIP.IsUnspecified() || p.SandboxIP.IsMulticast():
		return p, fmt.Errorf("%w: %s: sandbox address is not a unicast address", ErrInvalidPort, p)
	case p.SandboxIP.Is6() && !ipv6:
		return p, fmt.Errorf("%w: %s: IPv6 sandbox address with ip6tables off (no ip6 table)", ErrInvalidPort, p)
	case p.SandboxIP.Zone() != "" || p.HostIP.Zone() != "":
		return p, fmt.Errorf("%w: %s: an address with a zone (a map element cannot hold the interface)", ErrInvalidPort, p)
	}
	return p, nil
}

// String prints the mapping like Docker's port list:
// "0.0.0.0:8080->10.0.0.2:80/tcp", "[::]:8080->[fd00::2]:80/tcp".
func (p PortMapping) String() string {
	h := p.HostIP
	if p.any() {
		h = netip.IPv4Unspecified()
		if p.SandboxIP.Is6() && !p.SandboxIP.Is4In6() {
			h = netip.IPv6Unspecified()
		}
	}
	return fmt.Sprintf("%s->%s/%s", netip.AddrPortFrom(h, p.HostPort), netip.AddrPortFrom(p.SandboxIP, p.SandboxPort), p.Proto)
}

// family is the table that holds p.
func (p PortMapping) family() *family { return addrFamily(p.SandboxIP) }

// mapName is the map that holds p.
func (p PortMapping) mapName() string {
	if p.any() {
		return MapPortsAny
	}
	return MapPorts
}

// keyID names the element key as nft prints it: "198.51.100.1 . tcp . 8080"
// or "tcp . 8080", with "ip6 " before it for the ip6 table's maps. Two
// mappings with one keyID cannot both be published.
func (p PortMapping) keyID() string {
	k := fmt.Sprintf("%s . %d", p.Proto, p.HostPort)
	if !p.any() {
		k = p.HostIP.String() + " . " + k
	}
	return p.family().prefix + k
}

// element encodes p as a map element (p must be normal).
func (p PortMapping) element() nftables.SetElement {
	var key []byte
	if !p.any() {
		key = p.HostIP.AsSlice()
	}
	key = append(key, protoNums[p.Proto], 0, 0, 0)
	key = binary.BigEndian.AppendUint16(key, p.HostPort)
	key = append(key, 0, 0)
	val := binary.BigEndian.AppendUint16(p.SandboxIP.AsSlice(), p.SandboxPort)
	return nftables.SetElement{Key: key, Val: append(val, 0, 0)}
}

// portEntries returns the map entries of ps, identified as nft prints
// them: "198.51.100.1 . tcp . 8080 : 10.88.0.2 . 80", each in the table of
// its sandbox address's family.
func portEntries(ps ...PortMapping) entries {
	e := entries{}
	for _, p := range ps {
		fm := p.family()
		e.put(fm.key(p.mapName()), elementID(p), p.element())
		e.put(fm.key(SetPublished), publishedID(p), p.publishedElement())
	}
	return e
}

// publishedElement encodes p's sandbox end as an element of set published:
// addr(4 or 16) proto(1)+pad(3) port(2)+pad(2), as the key of map ports.
func (p PortMapping) publishedElement() nftables.SetElement {
	key := append(p.SandboxIP.AsSlice(), protoNums[p.Proto], 0, 0, 0)
	key = binary.BigEndian.AppendUint16(key, p.SandboxPort)
	return nftables.SetElement{Key: append(key, 0, 0)}
}

// publishedID names p's element of set published as nft prints it:
// "10.88.0.2 . tcp . 80".
func publishedID(p PortMapping) string {
	return fmt.Sprintf("%s . %s . %d", p.SandboxIP, p.Proto, p.SandboxPort)
}

// parsePublished decodes an element of set published (only the sandbox
// end of the mapping is set).
func parsePublished(el nftables.SetElement) (PortMapping, bool) {
	k := el.Key
	if len(k) != 12 && len(k) != 24 {
		return PortMapping{}, false
	}
	a, _ := netip.AddrFromSlice(k[:len(k)-8])
	k = k[len(k)-8:]
	return PortMapping{SandboxIP: a, Proto: protoName(k[0]), SandboxPort: binary.BigEndian.Uint16(k[4:6])}, true
}

func elementID(p PortMapping) string {
	return fmt.Sprintf("%s : %s . %d", p.keyID(), p.SandboxIP, p.SandboxPort)
}

// parsePort decodes an element of map set back into a mapping (IPv4 or
// IPv6, by the value's length).
func parsePort(set string, el nftables.SetElement) (PortMapping, bool) {
	k, v := el.Key, el.Val
	var p PortMapping
	if len(v) != 8 && len(v) != 20 {
		return p, false
	}
	alen := len(v) - 4
	if set == MapPorts {
		if len(k) != alen+8 {
			return p, false
		}
		p.HostIP, _ = netip.AddrFromSlice(k[:alen])
		k = k[alen:]
	}
	if len(k) != 8 {
		return p, false
	}
	p.Proto = protoName(k[0])
	p.HostPort = binary.BigEndian.Uint16(k[4:6])
	p.SandboxIP, _ = netip.AddrFromSlice(v[:alen])
	p.SandboxPort = binary.BigEndian.Uint16(v[alen : alen+2])
	return p, true
}

// normalPorts checks ps and returns them by keyID (the last of several
// mappings with one key wins); ipv6 is Options.IPv6.
func normalPorts(ps []PortMapping, ipv6 bool) (map[string]PortMapping, error) {
	out := make(map[string]PortMapping, len(ps))
	for _, p := range ps {
		n, err := p.normal(ipv6)
		if err != nil {
			return nil, err
		}
		out[n.keyID()] = n
	}
	return out, nil
}
