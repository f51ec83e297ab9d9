package dns

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"strings"
)

// systemdResolvConf is where systemd-resolved lists the real upstreams when
// /etc/resolv.conf only names its stub 127.0.0.53. A variable for tests.
var systemdResolvConf = "/run/systemd/resolve/resolv.conf"

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

// HostUpstreams reads the upstream servers from a resolv.conf at path,
// following systemd-resolved's /run/systemd/resolve/resolv.conf when the file
// only names the stub 127.0.0.53. Loopback servers are skipped (they are not
// reachable from a sandbox's view of the world, and would be a loop for
// 127.0.0.11); at most 3, port 53. Nil when nothing usable is found.
func HostUpstreams(path string) []netip.AddrPort {
	all := nameservers(path)
	if len(all) > 0 && onlyStub(all) {
		all = nameservers(systemdResolvConf)
	}
	var ups []netip.AddrPort
	for _, a := range all {
		if a.IsLoopback() || len(ups) == maxUpstreams {
			continue
		}
		ups = append(ups, netip.AddrPortFrom(a, 53))
	}
	return ups
}

func onlyStub(addrs []netip.Addr) bool {
	stub := netip.AddrFrom4([4]byte{127, 0, 0, 53})
	for _, a := range addrs {
		if a != stub {
			return false
		}
	}
	return true
}

// nameservers lists the valid "nameserver" addresses of a resolv.conf.
func nameservers(path string) []netip.Addr {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var addrs []netip.Addr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		if a, err := netip.ParseAddr(fields[1]); err == nil {
			addrs = append(addrs, a.Unmap())
		}
	}
	return addrs
}
