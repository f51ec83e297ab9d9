package config

import (
	"fmt"
	"net/netip"
)

// Default locations and values. The option table below repeats them as flag
// defaults; defaults() builds a Config from that table.
const (
	DefaultConfigFile = "/etc/tether/daemon.json"
	DefaultHost       = "unix:///run/tether.sock"
	DefaultDataRoot   = "/var/lib/tether"
	DefaultExecRoot   = "/run/tether"
	DefaultPidfile    = "/run/tether.pid"
	DefaultMTU        = 1500
	DefaultLogLevel   = "info"

	DefaultDockerPluginSocket = "/run/docker/plugins/tether.sock"
	DefaultDockerHost         = "unix:///var/run/docker.sock"
	DefaultDockerPluginDNS    = "169.254.77.77"
	DefaultLinkPool           = "10.254.0.0/16"
)

// option is one Tether setting: its daemon.json key, its dockerd flag, the
// value's shape and where it lands in Config.
type option struct {
	key   string // daemon.json key
	flag  string // long flag name (dockerd's)
	short string // one-letter alias, "" = none
	kind  kind
	def   string // default in flag syntax, "" = zero value
	comma bool   // a flag text may hold several items separated by commas
	usage string
	set   func(c *Config, v any) error
}

// options lists every key Tether reads, in the order they are applied.
var options = []option{
	{key: "bip", flag: "bip", kind: kindString, usage: "IPv4 address and prefix of the default bridge, e.g. 10.1.0.1/24",
		set: setString(func(c *Config) *string { return &c.BIP })},
	{key: "bridge", flag: "bridge", short: "b", kind: kindString, usage: `Attach the default network to an existing bridge ("none" = no default network)`,
		set: setString(func(c *Config) *string { return &c.Bridge })},
	{key: "fixed-cidr", flag: "fixed-cidr", kind: kindString, usage: "IPv4 sub-range of the default network for sandbox addresses",
		set: setString(func(c *Config) *string { return &c.FixedCIDR })},
	{key: "mtu", flag: "mtu", kind: kindInt, def: "1500", usage: `Set the MTU for the default "bridge" network`,
		set: setInt(func(c *Config) *int { return &c.MTU })},
	{key: "ip", flag: "ip", kind: kindString, def: "0.0.0.0", usage: "Host IP for port publishing from the default bridge network",
		set: setAddr(func(c *Config) *netip.Addr { return &c.IP })},
	{key: "icc", flag: "icc", kind: kindBool, def: "true", usage: "Enable inter-container communication for the default bridge network",
		set: setBool(func(c *Config) *bool { return &c.ICC })},
	{key: "ip-forward", flag: "ip-forward", kind: kindBool, def: "true", usage: "Enable IP forwarding in system configuration",
		set: setBool(func(c *Config) *bool { return &c.IPForward })},
	{key: "ip-masq", flag: "ip-masq", kind: kindBool, def: "true", usage: "Enable IP masquerading for the default bridge network",
		set: setBool(func(c *Config) *bool { return &c.IPMasq })},
	{key: "iptables", flag: "iptables", kind: kindBool, def: "true", usage: "Enable addition of firewall rules",
		set: setBool(func(c *Config) *bool { return &c.IPTables })},
	{key: "allow-direct-routing", flag: "allow-direct-routing", kind: kindBool, usage: "Allow direct routing from outside the host to published ports of sandbox addresses",
		set: setBool(func(c *Config) *bool { return &c.AllowDirectRouting })},
	{key: "forward-accept-other-tables", flag: "forward-accept-other-tables", kind: kindBool, usage: "Insert accept rules for Tether's bridges into forward chains of other nftables tables that drop their traffic (firewalld, ufw, iptables-nft FORWARD policy DROP)",
		set: setBool(func(c *Config) *bool { return &c.ForwardAcceptOtherTables })},
	{key: "userland-proxy", flag: "userland-proxy", kind: kindBool, def: "true", usage: "Use userland proxy for loopback traffic",
		set: setBool(func(c *Config) *bool { return &c.UserlandProxy })},
	{key: "default-address-pools", flag: "default-address-pool", kind: kindPools, usage: "Default address pools for local networks, e.g. base=10.10.0.0/16,size=24",
		set: setPools},
	{key: "default-gateway", flag: "default-gateway", kind: kindString, usage: "Default gateway IPv4 address for the default bridge network",
		set: setAddr(func(c *Config) *netip.Addr { return &c.DefaultGateway })},
	{key: "ipv6", flag: "ipv6", kind: kindBool, usage: `Enable IPv6 on the default "bridge" network (dual-stack)`,
		set: setBool(func(c *Config) *bool { return &c.IPv6 })},
	{key: "fixed-cidr-v6", flag: "fixed-cidr-v6", kind: kindString, usage: "IPv6 subnet of the default network, e.g. fd00:1::/64 (default: a unique local /64)",
		set: setPrefix(func(c *Config) *netip.Prefix { return &c.FixedCIDRv6 })},
	{key: "bip6", flag: "bip6", kind: kindString, usage: "IPv6 address and prefix of the default bridge, e.g. fd00:1::1/64",
		set: setPrefix(func(c *Config) *netip.Prefix { return &c.BIP6 })},
	{key: "default-gateway-v6", flag: "default-gateway-v6", kind: kindString, usage: "Default gateway IPv6 address for the default bridge network",
		set: setAddr(func(c *Config) *netip.Addr { return &c.DefaultGatewayV6 })},
	{key: "ip6tables", flag: "ip6tables", kind: kindBool, def: "true", usage: "Enable addition of IPv6 firewall rules (off when --iptables=false)",
		set: setBool(func(c *Config) *bool { return &c.IP6Tables })},
	{key: "dns", flag: "dns", kind: kindList, comma: true, usage: "DNS server to use",
		set: setAddrs(func(c *Config) *[]netip.Addr { return &c.DNS })},
	{key: "dns-search", flag: "dns-search", kind: kindList, usage: "DNS search domains to use",
		set: setList(func(c *Config) *[]string { return &c.DNSSearch })},
	{key: "dns-opts", flag: "dns-opt", kind: kindList, usage: "DNS options to use",
		set: setList(func(c *Config) *[]string { return &c.DNSOpts })},
	{key: "hosts", flag: "host", short: "H", kind: kindList, def: DefaultHost, usage: "Daemon socket(s) to listen on: unix:///path, tcp://host:port (TLS), fd:// (systemd)",
		set: setList(func(c *Config) *[]string { return &c.Hosts })},
	{key: "group", flag: "group", short: "G", kind: kindString, usage: "Group owning the unix socket(s)",
		set: setString(func(c *Config) *string { return &c.Group })},
	{key: "tls", flag: "tls", kind: kindBool, usage: "Use TLS on TCP listeners; implied by --tlsverify; --tls=false serves TCP unencrypted (unsafe)",
		set: setBoolPtr(func(c *Config) **bool { return &c.TLS })},
	{key: "tlsverify", flag: "tlsverify", kind: kindBool, usage: "Use TLS and require client certificates signed by --tlscacert",
		set: setBoolPtr(func(c *Config) **bool { return &c.TLSVerify })},
	{key: "tlscacert", flag: "tlscacert", kind: kindString, usage: "Trust client certs signed only by this CA",
		set: setString(func(c *Config) *string { return &c.TLSCACert })},
	{key: "tlscert", flag: "tlscert", kind: kindString, usage: "Path to TLS certificate file",
		set: setString(func(c *Config) *string { return &c.TLSCert })},
	{key: "tlskey", flag: "tlskey", kind: kindString, usage: "Path to TLS key file",
		set: setString(func(c *Config) *string { return &c.TLSKey })},
	{key: "cluster-store", flag: "cluster-store", kind: kindString, usage: "URL of the distributed storage backend",
		set: setString(func(c *Config) *string { return &c.ClusterStore })},
	{key: "cluster-advertise", flag: "cluster-advertise", kind: kindString, usage: "Address or interface name to advertise",
		set: setString(func(c *Config) *string { return &c.ClusterAdvertise })},
	{key: "cluster-store-opts", flag: "cluster-store-opt", kind: kindMap, usage: "Set cluster store options, key=value",
		set: setMap(func(c *Config) *map[string]string { return &c.ClusterStoreOpts })},
	{key: "docker-plugin", flag: "docker-plugin", kind: kindBool, usage: "Serve Docker's network and IPAM plugin protocol (docker network create -d tether --ipam-driver tether)",
		set: setBool(func(c *Config) *bool { return &c.DockerPlugin })},
	{key: "docker-plugin-socket", flag: "docker-plugin-socket", kind: kindString, def: DefaultDockerPluginSocket, usage: `Socket of the "tether" Docker plugin ("tether-overlay.sock" is made in the same directory)`,
		set: setString(func(c *Config) *string { return &c.DockerPluginSocket })},
	{key: "docker-host", flag: "docker-host", kind: kindString, def: DefaultDockerHost, usage: "The local dockerd's API, for network names and the Docker side of global networks",
		set: setString(func(c *Config) *string { return &c.DockerHost })},
	{key: "docker-plugin-dns", flag: "docker-plugin-dns", kind: kindString, def: DefaultDockerPluginDNS, usage: `IPv4 address (put on the host's lo) where Tether answers its networks' names for Docker's resolver (dockerd's "dns"); "none" = off`,
		set: setString(func(c *Config) *string { return &c.DockerPluginDNS })},
	{key: "bridge-driver", flag: "bridge-driver", kind: kindString, def: "bridge", usage: `Driver of the default network "bridge": bridge (a Linux bridge) or ovs (an Open vSwitch bridge)`,
		set: setString(func(c *Config) *string { return &c.BridgeDriver })},
	{key: "ovs-db", flag: "ovs-db", kind: kindString, usage: "OVSDB socket (unix:PATH) of Open vSwitch networks without -o ovs.db (default unix:/run/openvswitch/db.sock)",
		set: setString(func(c *Config) *string { return &c.OVSDB })},
	{key: "link-pool", flag: "link-pool", kind: kindString, def: DefaultLinkPool, usage: "IPv4 range point-to-point links take a /31 from (tether link create), skipping host routes, addresses and networks",
		set: setPrefix(func(c *Config) *netip.Prefix { return &c.LinkPool })},
	{key: "metrics-addr", flag: "metrics-addr", kind: kindString, usage: "Set default address and port to serve the metrics api on (plain HTTP, GET /metrics only), e.g. 127.0.0.1:9323",
		set: setString(func(c *Config) *string { return &c.MetricsAddr })},
	{key: "data-root", flag: "data-root", kind: kindString, def: DefaultDataRoot, usage: "Root directory of persistent Tether state",
		set: setString(func(c *Config) *string { return &c.DataRoot })},
	{key: "exec-root", flag: "exec-root", kind: kindString, def: DefaultExecRoot, usage: "Root directory for execution state files",
		set: setString(func(c *Config) *string { return &c.ExecRoot })},
	{key: "pidfile", flag: "pidfile", short: "p", kind: kindString, def: DefaultPidfile, usage: "Path to use for daemon PID file",
		set: setString(func(c *Config) *string { return &c.Pidfile })},
	{key: "debug", flag: "debug", short: "D", kind: kindBool, usage: "Enable debug mode (implies --log-level debug)",
		set: setBool(func(c *Config) *bool { return &c.Debug })},
	{key: "log-level", flag: "log-level", short: "l", kind: kindString, def: DefaultLogLevel, usage: `Set the logging level ("debug"|"info"|"warn"|"error"|"fatal")`,
		set: setString(func(c *Config) *string { return &c.LogLevel })},
	{key: "labels", flag: "label", kind: kindList, usage: "Set key=value labels to the daemon",
		set: setList(func(c *Config) *[]string { return &c.Labels })},
	{key: "live-restore", flag: "live-restore", kind: kindBool, def: "true", usage: "Keep sandboxes across daemon restarts (always on)",
		set: setBool(func(c *Config) *bool { return &c.LiveRestore })},
}

// optionByKey and optionByFlag index options.
var optionByKey, optionByFlag = indexOptions()

func indexOptions() (byKey, byFlag map[string]*option) {
	byKey, byFlag = map[string]*option{}, map[string]*option{}
	for i := range options {
		byKey[options[i].key] = &options[i]
		byFlag[options[i].flag] = &options[i]
	}
	return byKey, byFlag
}

// defaults returns the Config every load starts from: each option's def
// applied.
func defaults() *Config {
	c := &Config{}
	for _, o := range options {
		if o.def == "" {
			continue
		}
		v, err := o.kind.parseFlag([]string{o.def})
		if err == nil {
			err = o.set(c, v)
		}
		if err != nil {
			panic(fmt.Sprintf("config: bad default for %q: %v", o.key, err))
		}
	}
	return c
}

func setString(field func(*Config) *string) func(*Config, any) error {
	return func(c *Config, v any) error { *field(c) = v.(string); return nil }
}

func setBool(field func(*Config) *bool) func(*Config, any) error {
	return func(c *Config, v any) error { *field(c) = v.(bool); return nil }
}

func setBoolPtr(field func(*Config) **bool) func(*Config, any) error {
	return func(c *Config, v any) error { b := v.(bool); *field(c) = &b; return nil }
}

func setInt(field func(*Config) *int) func(*Config, any) error {
	return func(c *Config, v any) error { *field(c) = v.(int); return nil }
}

func setList(field func(*Config) *[]string) func(*Config, any) error {
	return func(c *Config, v any) error { *field(c) = v.([]string); return nil }
}

func setMap(field func(*Config) *map[string]string) func(*Config, any) error {
	return func(c *Config, v any) error { *field(c) = v.(map[string]string); return nil }
}

func setAddr(field func(*Config) *netip.Addr) func(*Config, any) error {
	return func(c *Config, v any) error {
		a, err := parseAddr(v.(string))
		*field(c) = a
		return err
	}
}

// setPrefix parses a CIDR as given (host bits kept; the checks decide
// whether they are allowed).
func setPrefix(field func(*Config) *netip.Prefix) func(*Config, any) error {
	return func(c *Config, v any) error {
		p, err := netip.ParsePrefix(v.(string))
		if err != nil {
			return fmt.Errorf("%q is not a CIDR", v)
		}
		*field(c) = p
		return nil
	}
}

func setAddrs(field func(*Config) *[]netip.Addr) func(*Config, any) error {
	return func(c *Config, v any) error {
		var addrs []netip.Addr
		for _, s := range v.([]string) {
			a, err := parseAddr(s)
			if err != nil {
				return err
			}
			addrs = append(addrs, a)
		}
		*field(c) = addrs
		return nil
	}
}

func setPools(c *Config, v any) error {
	var pools []AddressPool
	for _, p := range v.([]rawPool) {
		base, err := netip.ParsePrefix(p.base)
		if err != nil {
			return fmt.Errorf("base %q is not a CIDR", p.base)
		}
		pools = append(pools, AddressPool{Base: base.Masked(), Size: p.size})
	}
	c.DefaultAddressPools = pools
	return nil
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return a, nil
}
