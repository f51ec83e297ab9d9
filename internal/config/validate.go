package config

import (
	"fmt"
	"net"
	"net/netip"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tether-net/tether/internal/netaddr"
)

// checks validate a merged Config; each names the key it checks.
var checks = []struct {
	key   string
	check func(c *Config) error
}{
	{"bip", checkBIP},
	{"bip", checkBIPBridge},
	{"bridge", func(c *Config) error { return checkBridgeName(c.Bridge) }},
	{"fixed-cidr", checkFixedCIDR},
	{"mtu", func(c *Config) error { return checkMTU(c.MTU) }},
	{"default-gateway", func(c *Config) error { return checkIPv4(c.DefaultGateway) }},
	{"default-address-pools", func(c *Config) error { return checkPools(c.DefaultAddressPools) }},
	{"fixed-cidr-v6", checkFixedCIDRv6},
	{"bip6", checkBIP6},
	{"default-gateway-v6", checkGatewayV6},
	{"ip6tables", checkIP6Tables},
	{"dns-search", func(c *Config) error { return eachWord(c.DNSSearch) }},
	{"dns-opts", func(c *Config) error { return eachWord(c.DNSOpts) }},
	{"hosts", checkHosts},
	{"tls", checkTLSOff},
	{"tls", tlsNeedsKeyPair(func(c *Config) *bool { return c.TLS })},
	{"tlsverify", tlsNeedsKeyPair(func(c *Config) *bool { return c.TLSVerify })},
	{"tlscert", checkTLSCert},
	{"tlskey", checkTLSKey},
	{"tlscacert", checkTLSCACert},
	{"cluster-store", checkClusterStore},
	{"cluster-advertise", checkClusterAdvertise},
	{"cluster-store-opts", checkClusterOpts},
	{"docker-plugin-socket", checkPluginSocket},
	{"docker-host", checkDockerHost},
	{"docker-plugin-dns", checkPluginDNS},
	{"link-pool", checkLinkPool},
	{"ovs-db", checkOVSDB},
	{"bridge-driver", func(c *Config) error {
		if c.BridgeDriver != "bridge" && c.BridgeDriver != "ovs" {
			return fmt.Errorf("%q: want bridge or ovs", c.BridgeDriver)
		}
		return nil
	}},
	{"metrics-addr", func(c *Config) error { return checkMetricsAddr(c.MetricsAddr) }},
	{"data-root", func(c *Config) error { return checkAbs(c.DataRoot) }},
	{"exec-root", func(c *Config) error { return checkAbs(c.ExecRoot) }},
	{"pidfile", func(c *Config) error { return checkAbs(c.Pidfile) }},
	{"log-level", func(c *Config) error { return checkLogLevel(c.LogLevel) }},
	{"labels", func(c *Config) error { return each(c.Labels, checkLabel) }},
}

// validate runs every check and returns all failures.
func validate(c *Config) []error {
	var errs []error
	for _, ch := range checks {
		if err := ch.check(c); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ch.key, err))
		}
	}
	return errs
}

// checkBIP wants an IPv4 host address with its prefix, at most /30: not the
// network address (10.1.0.0/24) nor the broadcast address.
func checkBIP(c *Config) error {
	if c.BIP == "" {
		return nil
	}
	p, err := parseIPv4Prefix(c.BIP)
	if err != nil {
		return err
	}
	if p.Bits() > 30 {
		return fmt.Errorf("%q leaves no addresses for sandboxes", c.BIP)
	}
	if p.Addr() == p.Masked().Addr() {
		return fmt.Errorf("%q is the network address; give the bridge's own address, e.g. %s/%d",
			c.BIP, p.Addr().Next(), p.Bits())
	}
	if p.Addr() == netaddr.Last(p) {
		return fmt.Errorf("%q is the broadcast address; give the bridge's own address", c.BIP)
	}
	return nil
}

// checkBIPBridge refuses bip with bridge, as dockerd does: the address of an
// existing bridge is the bridge's own.
func checkBIPBridge(c *Config) error {
	if c.BIP != "" && c.Bridge != "" {
		return fmt.Errorf("you specified -b & --bip, mutually exclusive options; please specify only one")
	}
	return nil
}

// checkBridgeName accepts "none" or a Linux interface name (IFNAMSIZ-1 bytes,
// no '/', ':' or blanks).
func checkBridgeName(name string) error {
	if name == "" || name == "none" {
		return nil
	}
	if len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("%q is not a valid interface name (at most 15 bytes, no '/', ':' or blanks)", name)
	}
	return nil
}

// checkFixedCIDR wants an IPv4 prefix inside bip's subnet (when bip is
// given) on a default network that exists.
func checkFixedCIDR(c *Config) error {
	if c.FixedCIDR == "" {
		return nil
	}
	p, err := parseIPv4Prefix(c.FixedCIDR)
	if err != nil {
		return err
	}
	if c.Bridge == "none" {
		return fmt.Errorf("needs the default network, but bridge is %q", c.Bridge)
	}
	if bip, err := netip.ParsePrefix(c.BIP); err == nil && !within(p, bip) {
		return fmt.Errorf("%s is not inside bip's subnet %s", p, bip.Masked())
	}
	return nil
}

func checkMTU(mtu int) error {
	if mtu < 68 || mtu > 65535 {
		return fmt.Errorf("%d is out of range 68..65535", mtu)
	}
	return nil
}

func checkIPv4(a netip.Addr) error {
	if a.IsValid() && !a.Is4() {
		return fmt.Errorf("%s is not an IPv4 address", a)
	}
	return nil
}

// checkPools wants IPv4 bases with sizes from the base's length to 32, and
// IPv6 bases with sizes from the base's length (at least 48) to 124.
func checkPools(pools []AddressPool) error {
	for _, p := range pools {
		switch a := p.Base.Addr(); {
		case a.Is4():
			if p.Size < p.Base.Bits() || p.Size > 32 {
				return fmt.Errorf("base %s: size %d is out of range %d..32", p.Base, p.Size, p.Base.Bits())
			}
		case a.Is6() && !a.Is4In6():
			if low := max(p.Base.Bits(), minBits6); p.Size < low || p.Size > maxBits6 {
				return fmt.Errorf("base %s: size %d is out of range %d..%d", p.Base, p.Size, low, maxBits6)
			}
		default:
			return fmt.Errorf("base %s is not an IPv4 or IPv6 CIDR", p.Base)
		}
	}
	return nil
}

// IPv6 subnets of the default network: /48 to /124, as for any network.
const minBits6, maxBits6 = 48, 124

// checkPrefix6 wants an IPv6 prefix (not IPv4-mapped) of length /48../124.
func checkPrefix6(p netip.Prefix) error {
	if !p.Addr().Is6() || p.Addr().Is4In6() {
		return fmt.Errorf("%q is not an IPv6 CIDR", p)
	}
	if p.Bits() < minBits6 || p.Bits() > maxBits6 {
		return fmt.Errorf("%s: the prefix length must be between /%d and /%d", p, minBits6, maxBits6)
	}
	return nil
}

// needsIPv6 refuses an IPv6 setting of the default network without ipv6.
func needsIPv6(c *Config) error {
	if !c.IPv6 {
		return fmt.Errorf(`needs "ipv6": true (--ipv6)`)
	}
	return nil
}

// checkFixedCIDRv6 wants a canonical IPv6 prefix inside bip6's subnet (when
// bip6 is given) on a dual-stack default network.
func checkFixedCIDRv6(c *Config) error {
	p := c.FixedCIDRv6
	if !p.IsValid() {
		return nil
	}
	if err := checkPrefix6(p); err != nil {
		return err
	}
	if p != p.Masked() {
		return fmt.Errorf("%s has host bits set (did you mean %s?)", p, p.Masked())
	}
	if err := needsIPv6(c); err != nil {
		return err
	}
	if c.Bridge == "none" {
		return fmt.Errorf("needs the default network, but bridge is %q", c.Bridge)
	}
	if c.BIP6.IsValid() && !within(p, c.BIP6) {
		return fmt.Errorf("%s is not inside bip6's subnet %s", p, c.BIP6.Masked())
	}
	return nil
}

// checkBIP6 wants an IPv6 host address with its prefix, not the subnet's
// first address (its subnet-router anycast address), on a dual-stack
// default network Tether creates (not with bridge, as bip).
func checkBIP6(c *Config) error {
	p := c.BIP6
	if !p.IsValid() {
		return nil
	}
	if err := checkPrefix6(p); err != nil {
		return err
	}
	if p.Addr() == p.Masked().Addr() {
		return fmt.Errorf("%s is the subnet-router anycast address; give the bridge's own address, e.g. %s/%d",
			p, p.Addr().Next(), p.Bits())
	}
	if err := needsIPv6(c); err != nil {
		return err
	}
	if c.Bridge != "" {
		return fmt.Errorf("you specified -b & --bip6, mutually exclusive options; please specify only one")
	}
	return nil
}

// checkGatewayV6 wants an IPv6 address inside bip6's subnet, else inside
// fixed-cidr-v6, when either is given.
func checkGatewayV6(c *Config) error {
	a := c.DefaultGatewayV6
	if !a.IsValid() {
		return nil
	}
	if !a.Is6() || a.Is4In6() {
		return fmt.Errorf("%s is not an IPv6 address", a)
	}
	if err := needsIPv6(c); err != nil {
		return err
	}
	switch {
	case c.BIP6.IsValid() && !c.BIP6.Masked().Contains(a):
		return fmt.Errorf("%s is not inside bip6's subnet %s", a, c.BIP6.Masked())
	case !c.BIP6.IsValid() && c.FixedCIDRv6.IsValid() && !c.FixedCIDRv6.Masked().Contains(a):
		return fmt.Errorf("%s is not inside fixed-cidr-v6 %s", a, c.FixedCIDRv6.Masked())
	}
	return nil
}

// checkIP6Tables: IPv6 rules need the firewall (see ip6tablesGiven).
func checkIP6Tables(c *Config) error {
	if c.IP6Tables && !c.IPTables {
		return fmt.Errorf("ip6tables cannot be enabled when iptables is disabled")
	}
	return nil
}

func checkAbs(p string) error {
	if !path.IsAbs(p) {
		return fmt.Errorf("%q is not an absolute path", p)
	}
	return nil
}

var logLevels = []string{"debug", "info", "warn", "error", "fatal"}

func checkLogLevel(level string) error {
	if !slices.Contains(logLevels, level) {
		return fmt.Errorf("%q is not one of %s", level, strings.Join(logLevels, ", "))
	}
	return nil
}

func checkLabel(l string) error {
	if k, _, ok := strings.Cut(l, "="); !ok || k == "" {
		return fmt.Errorf("%q is not key=value", l)
	}
	return nil
}

// eachWord refuses empty entries and blanks, which would break the
// resolv.conf line they are written to.
func eachWord(items []string) error {
	return each(items, func(s string) error {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			return fmt.Errorf("%q must be one non-empty word", s)
		}
		return nil
	})
}

func each(items []string, check func(string) error) error {
	for _, s := range items {
		if err := check(s); err != nil {
			return err
		}
	}
	return nil
}

func parseIPv4Prefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 CIDR", s)
	}
	return p, nil
}

// within reports whether inner lies inside outer's subnet.
func within(inner, outer netip.Prefix) bool {
	return inner.Bits() >= outer.Bits() && outer.Masked().Contains(inner.Addr())
}

// checkPluginSocket: an absolute path of a ".sock" file (dockerd finds
// plugins by that suffix).
func checkPluginSocket(c *Config) error {
	if err := checkAbs(c.DockerPluginSocket); err != nil {
		return err
	}
	if !strings.HasSuffix(c.DockerPluginSocket, ".sock") || path.Base(c.DockerPluginSocket) == ".sock" {
		return fmt.Errorf("%q: dockerd finds plugin sockets by name: give NAME.sock (e.g. %s)", c.DockerPluginSocket, DefaultDockerPluginSocket)
	}
	return nil
}

// checkDockerHost: unix:///absolute/path or tcp://host:port.
func checkDockerHost(c *Config) error {
	h := c.DockerHost
	switch {
	case strings.HasPrefix(h, "unix://"):
		return checkAbs(strings.TrimPrefix(h, "unix://"))
	case strings.HasPrefix(h, "tcp://"):
		if _, _, err := net.SplitHostPort(strings.TrimPrefix(h, "tcp://")); err != nil {
			return fmt.Errorf("%q: %v", h, err)
		}
		return nil
	}
	return fmt.Errorf("%q: want unix:///path or tcp://host:port", h)
}

// checkPluginDNS: an IPv4 address, or "none".
func checkPluginDNS(c *Config) error {
	if c.DockerPluginDNS == "none" {
		return nil
	}
	a, err := netip.ParseAddr(c.DockerPluginDNS)
	if err != nil || !a.Is4() || a.IsUnspecified() || a.IsMulticast() {
		return fmt.Errorf("%q: want an IPv4 address (Docker's resolver asks it on port 53) or \"none\"", c.DockerPluginDNS)
	}
	if a.IsLoopback() {
		return fmt.Errorf("%q: dockerd dials daemon.json \"dns\" from each container's namespace, where a loopback address is the container's own: use an address the containers route to the host, e.g. %s", c.DockerPluginDNS, DefaultDockerPluginDNS)
	}
	return nil
}

// checkOVSDB: empty, or unix: and an absolute path (the only transport
// Tether speaks to ovsdb-server).
func checkOVSDB(c *Config) error {
	if c.OVSDB == "" {
		return nil
	}
	path, ok := strings.CutPrefix(c.OVSDB, "unix:")
	if !ok || !filepath.IsAbs(path) {
		return fmt.Errorf("%q: want unix:/absolute/path (ovsdb-server's socket, e.g. unix:/run/openvswitch/db.sock)", c.OVSDB)
	}
	return nil
}

// checkLinkPool: an IPv4 range with room for at least one /31, host bits clear.
func checkLinkPool(c *Config) error {
	p := c.LinkPool
	switch {
	case !p.Addr().Is4():
		return fmt.Errorf("%q: want an IPv4 CIDR, e.g. %s", p, DefaultLinkPool)
	case p != p.Masked():
		return fmt.Errorf("%q: host bits set (did you mean %s?)", p, p.Masked())
	case p.Bits() > 31 || p.Bits() < 8:
		return fmt.Errorf("%q: want a prefix length from /8 to /31 (each link takes a /31)", p)
	}
	return nil
}
