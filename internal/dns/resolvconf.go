package dns

import (
	"bytes"
	"net/netip"
	"strings"

	"github.com/tether-net/tether/internal/resolvconf"
)

// systemdResolvConf is where systemd-resolved lists the real upstreams when
// /etc/resolv.conf only names its stub 127.0.0.53. A variable for tests.
var systemdResolvConf = resolvconf.SystemdPath

// ResolvConf returns the content of a sandbox's /etc/resolv.conf:
// "nameserver 127.0.0.11", "search ..." from search, and "options ndots:0"
// followed by opts (Docker's behaviour; an ndots option in opts replaces
// ndots:0).
func ResolvConf(search, opts []string) []byte {
	var b bytes.Buffer
	b.WriteString("nameserver 127.0.0.11\n")
	if len(search) > 0 {
		b.WriteString("search " + strings.Join(search, " ") + "\n")
	}
	options := []string{"ndots:0"}
	for _, o := range opts {
		if strings.HasPrefix(o, "ndots:") {
			options = options[1:]
			break
		}
	}
	options = append(options, opts...)
	b.WriteString("options " + strings.Join(options, " ") + "\n")
	return b.Bytes()
}

// HostUpstreams are the upstream servers of the host's resolv.conf at path,
// read by resolvconf.Host (its systemd-resolved rule: a file naming only
// the stub 127.0.0.53 gives way to /run/systemd/resolve/resolv.conf).
// Loopback servers are skipped (they are not reachable from a sandbox's
// view of the world, and would be a loop for 127.0.0.11); at most 3, port
// 53. Nil when nothing usable is found. The sandboxes' resolv.conf on the
// default bridge is read through the same call, so both name the same
// servers.
func HostUpstreams(path string) []netip.AddrPort {
	var ups []netip.AddrPort
	for _, a := range resolvconf.Host(path, systemdResolvConf).Reachable() {
		if len(ups) == maxUpstreams {
			break
		}
		ups = append(ups, netip.AddrPortFrom(a, 53))
	}
	return ups
}
