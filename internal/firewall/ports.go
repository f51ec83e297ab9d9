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
	Proto       string     // "tcp" or "udp"
	HostIP      netip.Addr // invalid or 0.0.0.0 = every local address
	HostPort    uint16
	SandboxIP   netip.Addr
	SandboxPort uint16
}

// ErrInvalidPort is wrapped by the errors of AddPorts and Sync for a
// mapping that cannot be published (unknown protocol, port 0, not IPv4).
var ErrInvalidPort = errors.New("invalid port mapping")

var (
	portsKey    = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	portsAnyKey = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	portsVal    = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
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
// an unspecified host address made invalid (one spelling for "any").
func (p PortMapping) normal() (PortMapping, error) {
	p.HostIP, p.SandboxIP = p.HostIP.Unmap(), p.SandboxIP.Unmap()
	if p.any() {
		p.HostIP = netip.Addr{}
	}
	switch {
	case protoNums[p.Proto] == 0:
		return p, fmt.Errorf("%w: protocol %q (want tcp or udp)", ErrInvalidPort, p.Proto)
	case p.HostPort == 0 || p.SandboxPort == 0:
		return p, fmt.Errorf("%w: %s: port 0", ErrInvalidPort, p)
	case p.HostIP.IsValid() && !p.HostIP.Is4():
		return p, fmt.Errorf("%w: %s: host address is not IPv4", ErrInvalidPort, p)
	case !p.SandboxIP.Is4() || p.SandboxIP.IsUnspecified():
		return p, fmt.Errorf("%w: %s: sandbox address is not an IPv4 unicast address", ErrInvalidPort, p)
	}
	return p, nil
}

// String prints the mapping like Docker's port list: "0.0.0.0:8080->10.0.0.2:80/tcp".
func (p PortMapping) String() string {
	h := "0.0.0.0"
	if !p.any() {
		h = p.HostIP.String()
	}
	return fmt.Sprintf("%s:%d->%s:%d/%s", h, p.HostPort, p.SandboxIP, p.SandboxPort, p.Proto)
}

// mapName is the map that holds p.
func (p PortMapping) mapName() string {
	if p.any() {
		return MapPortsAny
	}
	return MapPorts
}

// keyID names the element key as nft prints it: "198.51.100.1 . tcp . 8080"
// or "tcp . 8080". Two mappings with one keyID cannot both be published.
func (p PortMapping) keyID() string {
	k := fmt.Sprintf("%s . %d", p.Proto, p.HostPort)
	if p.any() {
		return k
	}
	return p.HostIP.String() + " . " + k
}

// element encodes p as a map element (p must be normal).
func (p PortMapping) element() nftables.SetElement {
	var key []byte
	if !p.any() {
		a := p.HostIP.As4()
		key = append(key, a[:]...)
	}
	key = append(key, protoNums[p.Proto], 0, 0, 0)
	key = binary.BigEndian.AppendUint16(key, p.HostPort)
	key = append(key, 0, 0)
	s := p.SandboxIP.As4()
	val := binary.BigEndian.AppendUint16(s[:], p.SandboxPort)
	return nftables.SetElement{Key: key, Val: append(val, 0, 0)}
}

// portEntries returns the map entries of ps, identified as nft prints
// them: "198.51.100.1 . tcp . 8080 : 10.88.0.2 . 80".
func portEntries(ps ...PortMapping) entries {
	e := entries{}
	for _, p := range ps {
		e.put(p.mapName(), elementID(p), p.element())
		e.put(SetPublished, publishedID(p), p.publishedElement())
	}
	return e
}

// publishedElement encodes p's sandbox end as an element of set published:
// addr(4) proto(1)+pad(3) port(2)+pad(2), as the key of map ports.
func (p PortMapping) publishedElement() nftables.SetElement {
	s := p.SandboxIP.As4()
	key := append(s[:], protoNums[p.Proto], 0, 0, 0)
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
	if len(k) != 12 {
		return PortMapping{}, false
	}
	return PortMapping{SandboxIP: netip.AddrFrom4([4]byte(k[:4])), Proto: protoName(k[4]),
		SandboxPort: binary.BigEndian.Uint16(k[8:10])}, true
}

func elementID(p PortMapping) string {
	return fmt.Sprintf("%s : %s . %d", p.keyID(), p.SandboxIP, p.SandboxPort)
}

// parsePort decodes an element of map set back into a mapping.
func parsePort(set string, el nftables.SetElement) (PortMapping, bool) {
	k := el.Key
	var p PortMapping
	if set == MapPorts {
		if len(k) != 12 {
			return p, false
		}
		p.HostIP = netip.AddrFrom4([4]byte(k[:4]))
		k = k[4:]
	}
	if len(k) != 8 || len(el.Val) != 8 {
		return p, false
	}
	p.Proto = protoName(k[0])
	p.HostPort = binary.BigEndian.Uint16(k[4:6])
	p.SandboxIP = netip.AddrFrom4([4]byte(el.Val[:4]))
	p.SandboxPort = binary.BigEndian.Uint16(el.Val[4:6])
	return p, true
}

// normalPorts checks ps and returns them by keyID (the last of several
// mappings with one key wins).
func normalPorts(ps []PortMapping) (map[string]PortMapping, error) {
	out := make(map[string]PortMapping, len(ps))
	for _, p := range ps {
		n, err := p.normal()
		if err != nil {
			return nil, err
		}
		out[n.keyID()] = n
	}
	return out, nil
}
