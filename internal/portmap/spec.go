// Package portmap is the host side of port publishing that lives in the
// daemon itself: parsing Docker's -p forms, holding host ports (the daemon
// binds every published host port, as dockerd does, so no other program can
// take it and a duplicate is refused by the kernel), and the userland proxy
// that serves a held port with goroutines when the kernel path cannot.
// The nftables DNAT path is elsewhere; it uses the Specs parsed here.
package portmap

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrInvalid is wrapped by every Parse error (the API maps it to 400).
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
// Only IPv4 host addresses are supported. Errors wrap ErrInvalid and name
// the offending part and the whole value.
func Parse(s string) ([]Spec, error) {
	rest, proto, err := splitProto(s)
	if err != nil {
		return nil, err
	}
	ipPart, hostPart, ctrPart, err := splitParts(s, rest)
	if err != nil {
		return nil, err
	}
	var ip netip.Addr
	if ipPart != nil {
		if ip, err = parseHostIP(s, *ipPart); err != nil {
			return nil, err
		}
	}
	cLo, cHi, err := parseRange(s, "container port", ctrPart)
	if err != nil {
		return nil, err
	}
	hLo, hHi := uint16(0), uint16(0)
	if hostPart != "" {
		if hLo, hHi, err = parseRange(s, "host port", hostPart); err != nil {
			return nil, err
		}
		if hHi-hLo != cHi-cLo {
			return nil, invalid("host port range %q and container port range %q differ in length in %q", hostPart, ctrPart, s)
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
func splitProto(s string) (rest, proto string, err error) {
	rest, proto, found := strings.Cut(s, "/")
	if !found {
		return s, "tcp", nil
	}
	switch strings.ToLower(proto) {
	case "tcp", "udp":
		return rest, strings.ToLower(proto), nil
	case "":
		return "", "", invalid("empty protocol in %q", s)
	}
	return "", "", invalid("unknown protocol %q in %q (want tcp or udp)", proto, s)
}

// splitParts splits [ip:][hostPort:]containerPort. ip is nil when absent.
func splitParts(s, rest string) (ip *string, host, ctr string, err error) {
	parts := strings.Split(rest, ":")
	if strings.HasPrefix(rest, "[") && len(parts) < 3 {
		return nil, "", "", invalid("bracketed host IP without host and container ports in %q", s)
	}
	if len(parts) > 3 || strings.HasPrefix(rest, "[") {
		ip := strings.Trim(strings.Join(parts[:len(parts)-2], ":"), "[]")
		if a, err := netip.ParseAddr(ip); err == nil && a.Is6() {
			return nil, "", "", invalid("IPv6 host address %q in %q: not supported yet", ip, s)
		}
		return nil, "", "", invalid("too many parts in %q", s)
	}
	switch len(parts) {
	case 1:
		return nil, "", parts[0], nil
	case 2:
		if parts[0] == "" {
			return nil, "", "", invalid("empty host port in %q", s)
		}
		return nil, parts[0], parts[1], nil
	}
	return &parts[0], parts[1], parts[2], nil
}

func parseHostIP(s, p string) (netip.Addr, error) {
	if p == "" {
		return netip.Addr{}, invalid("empty host IP in %q", s)
	}
	ip, err := netip.ParseAddr(p)
	if err != nil {
		return netip.Addr{}, invalid("invalid host IP %q in %q", p, s)
	}
	if !ip.Is4() {
		return netip.Addr{}, invalid("IPv6 host address %q in %q: not supported yet", p, s)
	}
	return ip, nil
}

// parseRange parses "N" or "N-M" (N <= M), every port in 1-65535.
func parseRange(s, what, p string) (lo, hi uint16, err error) {
	if p == "" {
		return 0, 0, invalid("empty %s in %q", what, s)
	}
	a, b, isRange := strings.Cut(p, "-")
	if lo, err = parsePort(a); err != nil {
		return 0, 0, invalid("invalid %s %q in %q", what, p, s)
	}
	hi = lo
	if isRange {
		if hi, err = parsePort(b); err != nil || hi < lo {
			return 0, 0, invalid("invalid %s range %q in %q", what, p, s)
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
// ephemeral, so that Parse(String(s)) gives s back.
func String(s Spec) string {
	ctr := strconv.Itoa(int(s.ContainerPort)) + "/" + s.Proto
	host := ""
	if s.HostPort != 0 {
		host = strconv.Itoa(int(s.HostPort))
	}
	switch {
	case s.HostIP.IsValid():
		return s.HostIP.String() + ":" + host + ":" + ctr
	case host != "":
		return host + ":" + ctr
	}
	return ctr
}

// Validate checks a Spec built by any front (Parse, FromBinding, a CNI
// runtime's portMappings): a protocol of tcp or udp, a container port, and a
// host address that is IPv4 when given. Errors wrap ErrInvalid.
func (s Spec) Validate() error {
	switch {
	case s.Proto != "tcp" && s.Proto != "udp":
		return invalid("protocol %q: want tcp or udp", s.Proto)
	case s.ContainerPort == 0:
		return invalid("container port 0")
	case s.HostIP.IsValid() && !s.HostIP.Is4():
		return invalid("IPv6 host address %s: not supported yet", s.HostIP)
	}
	return nil
}
