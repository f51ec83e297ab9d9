// Package portspec is the one grammar of published ports: Docker's -p values
// (docker run -p) and the entries of Docker's PortBindings
// (HostConfig.PortBindings, the wire form), both read into the same Spec by
// the same helpers. It imports nothing of the daemon, so the thin client can
// parse -p without linking the host side of publishing (package portmap,
// which re-exports it).
package portspec

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrInvalid is wrapped by every Parse and FromBinding error (the API maps it
// to 400).
var ErrInvalid = errors.New("invalid port specification")

// Spec is one published port after parsing (ranges expanded to one Spec per
// port).
type Spec struct {
	HostIP        netip.Addr // invalid = the daemon's default binding address (option "ip", default 0.0.0.0)
	HostPort      uint16     // 0 = ephemeral (chosen when held)
	ContainerPort uint16
	Proto         string // "tcp" or "udp"
}

// Parse parses one -p value:
// [hostIP:][hostPort[-hostPortEnd]:]containerPort[-containerPortEnd][/tcp|/udp].
// The protocol defaults to tcp. "IP::80" and a bare "80" leave the host port
// ephemeral (0). Host and container ranges must have the same length; a
// container range alone gives one ephemeral host port per container port.
// An IPv6 host address is written in brackets, as Docker documents it
// ("[::1]:8080:80", "[::]::80/udp"); an unbracketed one ("::1:8080:80",
// ambiguous with the ports) is refused. An IPv4-mapped address is read as
// its IPv4 address; a zone ("fe80::1%eth0") is refused. Errors wrap
// ErrInvalid and name the offending part and the whole value.
func Parse(s string) ([]Spec, error) {
	where := strconv.Quote(s)
	rest, proto, err := splitProto(where, s)
	if err != nil {
		return nil, err
	}
	ipPart, hostPart, ctrPart, err := splitParts(where, rest)
	if err != nil {
		return nil, err
	}
	var ip netip.Addr
	if ipPart != nil {
		if *ipPart == "" {
			return nil, invalid("empty host IP in %s", where)
		}
		if ip, err = parseHostIP(where, *ipPart); err != nil {
			return nil, err
		}
	}
	return expand(where, ip, hostPart, ctrPart, proto)
}

// FromBinding reads one binding of a Docker PortBindings entry: port is the
// entry's key, "containerPort[-end][/tcp|/udp]" ("80/tcp", "80",
// "8000-8001/udp"), hostIP and hostPort the binding's HostIp and HostPort
// ("" = the daemon's default address, an ephemeral port). hostIP is a bare
// address, IPv4 or IPv6 ("::", "2001:db8::1": no brackets, as in Docker's
// HostIp). hostPort may be a range as long as the container range. Through
// the same helpers it gives what Parse gives for the -p value
// "hostIP:hostPort:port" (the empty parts left out: "hostIP::port",
// "hostPort:port", "port"; an IPv6 hostIP bracketed); errors wrap
// ErrInvalid and name the key and the binding.
func FromBinding(port, hostIP, hostPort string) ([]Spec, error) {
	where := fmt.Sprintf("%q (HostIp %q, HostPort %q)", port, hostIP, hostPort)
	ctr, proto, err := splitProto(where, port)
	if err != nil {
		return nil, err
	}
	var ip netip.Addr
	if hostIP != "" {
		if ip, err = parseHostIP(where, hostIP); err != nil {
			return nil, err
		}
	}
	return expand(where, ip, hostPort, ctr, proto)
}

// expand parses the container port (range) and the host port (range, ""
// for ephemeral) and gives one Spec per container port.
func expand(where string, ip netip.Addr, hostPart, ctrPart, proto string) ([]Spec, error) {
	cLo, cHi, err := parseRange(where, "container port", ctrPart)
	if err != nil {
		return nil, err
	}
	hLo, hHi := uint16(0), uint16(0)
	if hostPart != "" {
		if hLo, hHi, err = parseRange(where, "host port", hostPart); err != nil {
			return nil, err
		}
		if hHi-hLo != cHi-cLo {
			return nil, invalid("host port range %q and container port range %q differ in length in %s", hostPart, ctrPart, where)
		}
	}
	specs := make([]Spec, 0, int(cHi-cLo)+1)
	for i := 0; i <= int(cHi-cLo); i++ {
		sp := Spec{HostIP: ip, ContainerPort: cLo + uint16(i), Proto: proto}
		if hostPart != "" {
			sp.HostPort = hLo + uint16(i)
		}
		specs = append(specs, sp)
	}
	return specs, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// splitProto splits off "/tcp" or "/udp" (default tcp).
func splitProto(where, s string) (rest, proto string, err error) {
	rest, proto, found := strings.Cut(s, "/")
	if !found {
		return s, "tcp", nil
	}
	switch strings.ToLower(proto) {
	case "tcp", "udp":
		return rest, strings.ToLower(proto), nil
	case "":
		return "", "", invalid("empty protocol in %s", where)
	}
	return "", "", invalid("unknown protocol %q in %s (want tcp or udp)", proto, where)
}

// splitParts splits [ip:][hostPort:]containerPort, ip possibly in
// brackets ("[::1]:8080:80"). ip is nil when absent.
func splitParts(where, rest string) (ip *string, host, ctr string, err error) {
	if strings.HasPrefix(rest, "[") {
		return splitBracketed(where, rest)
	}
	parts := strings.Split(rest, ":")
	if len(parts) > 3 {
		ip := strings.Join(parts[:len(parts)-2], ":")
		if a, err := netip.ParseAddr(ip); err == nil && a.Is6() {
			return nil, "", "", invalid("IPv6 host address %q in %s must be in brackets: \"[%s]:%s:%s\"",
				ip, where, ip, parts[len(parts)-2], parts[len(parts)-1])
		}
		return nil, "", "", invalid("too many parts in %s", where)
	}
	switch len(parts) {
	case 1:
		return nil, "", parts[0], nil
	case 2:
		if parts[0] == "" {
			return nil, "", "", invalid("empty host port in %s", where)
		}
		return nil, parts[0], parts[1], nil
	}
	return &parts[0], parts[1], parts[2], nil
}

// splitBracketed splits "[ip]:hostPort:containerPort" (hostPort may be
// empty: ephemeral). The ports are required: "[::1]:80" is refused.
func splitBracketed(where, rest string) (ip *string, host, ctr string, err error) {
	end := strings.IndexByte(rest, ']')
	if end < 0 {
		return nil, "", "", invalid("missing ']' after bracketed host IP in %s", where)
	}
	addr, after := rest[1:end], rest[end+1:]
	ports, ok := strings.CutPrefix(after, ":")
	host, ctr, ok2 := strings.Cut(ports, ":")
	switch {
	case !ok && after != "":
		return nil, "", "", invalid("unexpected %q after bracketed host IP in %s", after, where)
	case !ok || !ok2:
		return nil, "", "", invalid("bracketed host IP without host and container ports in %s", where)
	case strings.Contains(ctr, ":"):
		return nil, "", "", invalid("too many parts in %s", where)
	}
	return &addr, host, ctr, nil
}

// parseHostIP parses a non-empty host address, IPv4 or IPv6 (no brackets
// here); an IPv4-mapped IPv6 address gives its IPv4 address, a zone is
// refused (a published port binds no link-scoped address).
func parseHostIP(where, p string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(p)
	if err != nil {
		return netip.Addr{}, invalid("invalid host IP %q in %s", p, where)
	}
	if ip.Zone() != "" {
		return netip.Addr{}, invalid("host IP %q in %s: an IPv6 zone is not allowed", p, where)
	}
	return ip.Unmap(), nil
}

// parseRange parses "N" or "N-M" (N <= M), every port in 1-65535.
func parseRange(where, what, p string) (lo, hi uint16, err error) {
	if p == "" {
		return 0, 0, invalid("empty %s in %s", what, where)
	}
	a, b, isRange := strings.Cut(p, "-")
	if lo, err = parsePort(a); err != nil {
		return 0, 0, invalid("invalid %s %q in %s", what, p, where)
	}
	hi = lo
	if isRange {
		if hi, err = parsePort(b); err != nil || hi < lo {
			return 0, 0, invalid("invalid %s range %q in %s", what, p, where)
		}
	}
	return lo, hi, nil
}

func parsePort(p string) (uint16, error) {
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("bad port %q", p)
	}
	return uint16(n), nil
}

// String formats s as "hostIP:hostPort:containerPort/proto", leaving out
// the host IP when it is the default and the host port when it is
// ephemeral, so that Parse(String(s)) gives s back. An IPv6 host address is
// bracketed as Docker prints it: "[::1]:8080:80/tcp", "[::]::80/udp".
func String(s Spec) string {
	ctr := strconv.Itoa(int(s.ContainerPort)) + "/" + s.Proto
	host := ""
	if s.HostPort != 0 {
		host = strconv.Itoa(int(s.HostPort))
	}
	switch {
	case s.HostIP.Is4():
		return s.HostIP.String() + ":" + host + ":" + ctr
	case s.HostIP.IsValid():
		return "[" + s.HostIP.String() + "]:" + host + ":" + ctr
	case host != "":
		return host + ":" + ctr
	}
	return ctr
}

// Binding formats s as one Docker PortBindings entry: the key
// "containerPort/proto" and the binding's HostIp and HostPort ("" for the
// default address and an ephemeral port), so that FromBinding gives s back.
func Binding(s Spec) (port, hostIP, hostPort string) {
	port = strconv.Itoa(int(s.ContainerPort)) + "/" + s.Proto
	if s.HostIP.IsValid() {
		hostIP = s.HostIP.String()
	}
	if s.HostPort != 0 {
		hostPort = strconv.Itoa(int(s.HostPort))
	}
	return port, hostIP, hostPort
}

// Validate checks a Spec built by any front (Parse, FromBinding, a CNI
// runtime's portMappings): a protocol of tcp or udp, a container port, and,
// when given, a host address without an IPv6 zone. IPv4 and IPv6 host
// addresses are both valid; an IPv4-mapped IPv6 address is valid and means
// its IPv4 address (Parse and FromBinding unmap it, Hold binds it as IPv4;
// a caller comparing families should Unmap first). Errors wrap ErrInvalid.
func (s Spec) Validate() error {
	switch {
	case s.Proto != "tcp" && s.Proto != "udp":
		return invalid("protocol %q: want tcp or udp", s.Proto)
	case s.ContainerPort == 0:
		return invalid("container port 0")
	case s.HostIP.Zone() != "":
		return invalid("host address %s: an IPv6 zone is not allowed", s.HostIP)
	}
	return nil
}
