// Package resolvconf is the one reader of the host's resolv.conf. Both
// users of the host's resolver settings read it through Host, so they see
// the same servers: the embedded DNS resolver (its upstreams,
// dns.HostUpstreams) and the resolv.conf written into sandboxes on the
// default bridge (internal/engine).
//
// # The systemd-resolved rule
//
// On a host running systemd-resolved, /etc/resolv.conf usually names only
// resolved's stub listener, 127.0.0.53, which a sandbox cannot reach (it is
// the host's loopback) and which the embedded resolver must not forward to
// (it is a loopback address of the daemon's namespace, not a server of the
// network). resolved lists the servers it really uses in
// /run/systemd/resolve/resolv.conf. The rule:
//
//   - When every nameserver of the host file is 127.0.0.53 (at least one),
//     and the systemd file can be read and names at least one nameserver,
//     the systemd file is used whole: its nameservers, search list and
//     options.
//   - Otherwise the host file is used as it is (a missing or empty systemd
//     file does not throw away the host file's search list and options).
//   - Only 127.0.0.53 counts as the stub: another loopback server (a local
//     dnsmasq or unbound on 127.0.0.1) is not known to forward to the
//     servers in resolved's file, so its file is not substituted for it.
//
// Before this package the rule was written twice: the engine followed the
// systemd file only for exactly one "nameserver 127.0.0.53" line and only
// when that file named a server; the resolver followed it whenever all
// lines were the stub, even when the file was missing. The rule above is
// the union of what both followed, with the engine's guard on the systemd
// file.
//
// # Parsing
//
// Lines are "keyword value..."; lines starting with '#' or ';' are comments
// (as in glibc). "nameserver ADDR" adds an IPv4 or IPv6 address (an
// IPv4-mapped IPv6 address is unmapped; anything else is skipped);
// "search" and "domain" set the search list, the last such line winning
// (glibc: they are mutually exclusive); "options" lines accumulate. Other
// keywords (sortlist, ...) are ignored.
package resolvconf

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
)

// Well-known paths.
const (
	// HostPath is the host's resolver configuration.
	HostPath = "/etc/resolv.conf"
	// SystemdPath is where systemd-resolved lists the servers it uses.
	SystemdPath = "/run/systemd/resolve/resolv.conf"
)

// Stub is systemd-resolved's stub listener.
var Stub = netip.AddrFrom4([4]byte{127, 0, 0, 53})

// File is what Tether reads of a resolv.conf.
type File struct {
	Nameservers []netip.Addr
	Search      []string
	Options     []string
}

// Parse reads resolv.conf syntax from r (see the package doc).
func Parse(r io.Reader) (File, error) {
	var f File
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") || strings.HasPrefix(fields[0], ";") {
			continue
		}
		switch fields[0] {
		case "nameserver":
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				f.Nameservers = append(f.Nameservers, a.Unmap())
			}
		case "search", "domain":
			f.Search = fields[1:]
		case "options":
			f.Options = append(f.Options, fields[1:]...)
		}
	}
	if err := sc.Err(); err != nil {
		return File{}, fmt.Errorf("read resolv.conf: %w", err)
	}
	return f, nil
}

// Read parses the file at path.
func Read(path string) (File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return File{}, err
	}
	defer fh.Close()
	f, err := Parse(fh)
	if err != nil {
		return File{}, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Host reads the host's resolver settings from hostPath, applying the
// systemd-resolved rule with systemdPath (normally HostPath and
// SystemdPath; tests pass files of their own). A file that cannot be read
// counts as empty: a host without resolv.conf has no servers to offer.
func Host(hostPath, systemdPath string) File {
	f, _ := Read(hostPath)
	if !f.onlyStub() {
		return f
	}
	if sd, err := Read(systemdPath); err == nil && len(sd.Nameservers) > 0 {
		return sd
	}
	return f
}

// onlyStub: at least one nameserver, and all are the stub.
func (f File) onlyStub() bool {
	for _, a := range f.Nameservers {
		if a != Stub {
			return false
		}
	}
	return len(f.Nameservers) > 0
}

// Reachable are the nameservers that are not loopback addresses: the ones a
// sandbox (its own loopback) and the embedded resolver (which listens on a
// loopback address itself) can use. In the file's order.
func (f File) Reachable() []netip.Addr {
	var out []netip.Addr
	for _, a := range f.Nameservers {
		if !a.IsLoopback() {
			out = append(out, a)
		}
	}
	return out
}
