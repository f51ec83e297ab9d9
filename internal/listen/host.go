// Package listen opens the daemon's API listeners from its -H addresses, as
// dockerd does: unix sockets (mode 0660, owned by the configured group), TCP
// sockets (TLS, optionally requiring client certificates), and sockets
// handed over by systemd (fd://, socket activation).
package listen

import (
	"fmt"
	"net"
	"path"
	"strconv"
	"strings"
)

// Docker's well-known API ports, used when a tcp:// address has no port.
const (
	PortTLS   = 2376
	PortPlain = 2375
)

// loopback is the address of a tcp:// entry without a host: dockerd listens
// on localhost then, never on every interface.
const loopback = "127.0.0.1"

// Host is one parsed -H address.
type Host struct {
	Proto string // "unix", "tcp" or "fd"
	Addr  string // socket path; host:port; fd number ("" = every activated socket)
}

// String returns the address in canonical form: unix:///path,
// tcp://host:port, fd:// or fd://N.
func (h Host) String() string { return h.Proto + "://" + h.Addr }

// ParseHost parses one -H address: unix:///abs/path, tcp://host:port,
// tcp://host (port defaultPort), tcp://:port (host 127.0.0.1), fd:// (every
// activated socket) or fd://N (the socket at file descriptor N). A bare
// host:port means tcp, as with dockerd.
func ParseHost(s string, defaultPort int) (Host, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		scheme, rest = "tcp", s
	}
	switch scheme {
	case "unix":
		return parseUnix(rest)
	case "tcp":
		return parseTCP(rest, defaultPort)
	case "fd":
		return parseFD(rest)
	}
	return Host{}, fmt.Errorf("%q: unknown scheme %q (want unix:///path, tcp://host:port or fd://)", s, scheme)
}

func parseUnix(p string) (Host, error) {
	if !path.IsAbs(p) {
		return Host{}, fmt.Errorf("%q: the socket path must be absolute (unix:///path)", "unix://"+p)
	}
	return Host{Proto: "unix", Addr: path.Clean(p)}, nil
}

// parseTCP accepts host:port, [v6]:port, host and [v6]; the host may be
// empty (loopback) and the port missing (defaultPort).
func parseTCP(addr string, defaultPort int) (Host, error) {
	if strings.ContainsAny(addr, "/?# ") {
		return Host{}, fmt.Errorf("%q: want tcp://host:port (a socket path is written unix:///path)", "tcp://"+addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var err2 error
		if host, port, err2 = net.SplitHostPort(addr + ":"); err2 != nil {
			return Host{}, fmt.Errorf("%q: %w", "tcp://"+addr, err)
		}
	}
	if host == "" {
		host = loopback
	}
	n, err := parsePort(port, defaultPort)
	if err != nil {
		return Host{}, fmt.Errorf("%q: %w", "tcp://"+addr, err)
	}
	return Host{Proto: "tcp", Addr: net.JoinHostPort(host, strconv.Itoa(n))}, nil
}

func parsePort(port string, defaultPort int) (int, error) {
	if port == "" {
		return defaultPort, nil
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not a number 1..65535", port)
	}
	return int(n), nil
}

func parseFD(n string) (Host, error) {
	if n == "" {
		return Host{Proto: "fd"}, nil
	}
	fd, err := strconv.Atoi(n)
	if err != nil || fd < firstActivatedFD {
		return Host{}, fmt.Errorf("%q: want fd:// or fd://N with N a file descriptor number, %d or more", "fd://"+n, firstActivatedFD)
	}
	return Host{Proto: "fd", Addr: strconv.Itoa(fd)}, nil
}
