package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tether-net/tether/internal/store"
)

// Advertise is cluster-advertise parsed: an interface name or an address
// (IPv4 or IPv6), and a port.
type Advertise struct {
	Interface string
	Addr      netip.Addr
	Port      int
}

// ParseAdvertise reads IFACE:PORT, IPv4:PORT or [IPv6]:PORT. The address
// becomes the node's VTEP, so it must be one other hosts can reach: not
// unspecified or loopback; an IPv6 one also not link-local (a VTEP has no
// zone), multicast or IPv4-mapped (write the IPv4 form). Brackets hold an
// IPv6 address only.
func ParseAdvertise(s string) (Advertise, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return Advertise{}, fmt.Errorf("%q: want IFACE:PORT, IP:PORT or [IPv6]:PORT", s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return Advertise{}, fmt.Errorf("%q: bad port %q", s, port)
	}
	bracketed := strings.HasPrefix(s, "[")
	if a, err := netip.ParseAddr(host); err == nil {
		if err := advertiseAddr(a, bracketed); err != nil {
			return Advertise{}, fmt.Errorf("%q: %w", s, err)
		}
		return Advertise{Addr: a, Port: p}, nil
	}
	if bracketed {
		return Advertise{}, fmt.Errorf("%q: %q in brackets is not an IPv6 address", s, host)
	}
	if !validIfName(host) {
		return Advertise{}, fmt.Errorf("%q: %q is neither an IP address nor an interface name", s, host)
	}
	return Advertise{Interface: host, Port: p}, nil
}

// advertiseAddr checks an address given in cluster-advertise: IPv4 bare,
// IPv6 in brackets, both unicast addresses other hosts can reach.
func advertiseAddr(a netip.Addr, bracketed bool) error {
	if a.Is4() {
		if bracketed {
			return fmt.Errorf("an IPv4 address is written without brackets")
		}
		if a.IsUnspecified() || a.IsLoopback() {
			return fmt.Errorf("the address must be an IPv4 address other hosts can reach")
		}
		return nil
	}
	switch {
	case a.Zone() != "":
		return fmt.Errorf("the address must not have a zone (a link-local address cannot be a VTEP)")
	case a.Is4In6():
		return fmt.Errorf("an IPv4-mapped address: write the IPv4 address without brackets")
	case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast():
		return fmt.Errorf("the address must be a global IPv6 address other hosts can reach (not unspecified, loopback, multicast or link-local)")
	}
	return nil
}

// validIfName: a name the kernel takes for a link (its dev_valid_name: at
// most 15 bytes, not "." or "..", no '/', ':' or white space), printable
// ASCII only.
func validIfName(n string) bool {
	if n == "" || len(n) > 15 || n == "." || n == ".." {
		return false
	}
	for i := 0; i < len(n); i++ {
		if b := n[i]; b <= ' ' || b >= 0x7f || b == '/' || b == ':' {
			return false
		}
	}
	return true
}

// clusterOpts are the cluster-store-opts keys Tether reads (Docker's names).
var clusterOpts = map[string]bool{"kv.cacertfile": true, "kv.certfile": true, "kv.keyfile": true,
	"discovery.ttl": true, "discovery.heartbeat": true}

// checkClusterStore checks cluster-store with the parser the daemon and the
// store backends use (store.ParseURL), so a URL valid here opens there.
func checkClusterStore(c *Config) error {
	if c.ClusterStore == "" || isConsul(c.ClusterStore) { // consul: refused by the gaps table
		return nil
	}
	if _, err := store.ParseURL(c.ClusterStore, store.URLSchemes...); err != nil {
		return fmt.Errorf("%q: %w", c.ClusterStore, err)
	}
	return nil
}

func checkClusterAdvertise(c *Config) error {
	if c.ClusterAdvertise == "" {
		if c.ClusterStore != "" {
			return errors.New("required with cluster-store: the address other hosts reach this one at (IFACE:PORT, IP:PORT or [IPv6]:PORT)")
		}
		return nil
	}
	if c.ClusterStore == "" {
		return errors.New("given without cluster-store")
	}
	_, err := ParseAdvertise(c.ClusterAdvertise)
	return err
}

func checkClusterOpts(c *Config) error {
	for k, v := range c.ClusterStoreOpts {
		if !clusterOpts[k] {
			return fmt.Errorf("unknown option %q (known: kv.cacertfile, kv.certfile, kv.keyfile, discovery.ttl)", k)
		}
		if k == "discovery.ttl" || k == "discovery.heartbeat" {
			if n, err := strconv.Atoi(v); err != nil || n < 1 {
				return fmt.Errorf("%s=%q: want a whole number of seconds", k, v)
			}
		}
	}
	if len(c.ClusterStoreOpts) > 0 && c.ClusterStore == "" {
		return errors.New("given without cluster-store")
	}
	return nil
}
