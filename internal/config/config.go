// Package config turns a Docker-style daemon.json plus command-line flags into
// a validated Config. Key and flag names follow dockerd's for everything
// networking; a key given both in the file and as a flag is an error naming
// the key, as dockerd does.
package config

import "net/netip"

// AddressPool is one entry of default-address-pools: carve Base into
// subnets of prefix length Size.
type AddressPool struct {
	Base netip.Prefix `json:"base"`
	Size int          `json:"size"`
}

// Config is the daemon's effective configuration after merging file and flags.
// Zero values are replaced by defaults in Load; fields are never nil maps/slices
// where a default exists. See docs/config.md for every key, flag and default.
type Config struct {
	// Default bridge network ("bridge", Linux bridge tether0 unless Bridge says otherwise).
	BIP                 string        // "bip": CIDR whose host part is the bridge address, e.g. 10.171.211.13/21. "" = choose.
	Bridge              string        // "bridge"/-b: existing Linux bridge to use; "none" = no default network; "" = create tether0.
	FixedCIDR           string        // "fixed-cidr": sub-range of the default subnet for sandboxes.
	MTU                 int           // "mtu": 0 = 1500 (Load never returns 0).
	IP                  netip.Addr    // "ip": default host binding address for published ports (default 0.0.0.0).
	ICC                 bool          // "icc": default true.
	IPForward           bool          // "ip-forward": default true.
	IPMasq              bool          // "ip-masq": default true.
	IPTables            bool          // "iptables": default true.
	UserlandProxy       bool          // "userland-proxy": default true.
	AllowDirectRouting  bool          // "allow-direct-routing": published ports' sandbox addresses open to direct routing from outside; default false.
	DefaultAddressPools []AddressPool // "default-address-pools" (IPv4 and IPv6 bases); no IPv4 entry = Docker's defaults (see ipam.DefaultPools), no IPv6 entry = a ULA /48 (ipam.DefaultPools6).
	DefaultGateway      netip.Addr    // "default-gateway": gateway for sandboxes on the default network.

	// IPv6 on the default network (docs/config.md).
	IPv6             bool         // "ipv6": the default network "bridge" is dual-stack; default false.
	FixedCIDRv6      netip.Prefix // "fixed-cidr-v6": the default network's IPv6 subnet (canonical); zero = chosen (a ULA /64).
	BIP6             netip.Prefix // "bip6": the default bridge's IPv6 address with its prefix length, e.g. fd00:1::1/64; zero = none.
	DefaultGatewayV6 netip.Addr   // "default-gateway-v6": IPv6 gateway for sandboxes on the default network.
	IP6Tables        bool         // "ip6tables": IPv6 rules in the firewall; default true, false when iptables is false and ip6tables not given.

	// Coexistence with other firewalls (docs/firewall.md).
	ForwardAcceptOtherTables bool // "forward-accept-other-tables": insert accept rules for Tether's bridges into other nftables tables' forward chains that drop them; default false.

	// Name resolution written into sandboxes' resolv.conf.
	DNS       []netip.Addr // "dns"
	DNSSearch []string     // "dns-search"
	DNSOpts   []string     // "dns-opts"

	// API listeners and TLS.
	Hosts     []string // "hosts"/-H, canonical (tcp://host:port, ports filled in); default ["unix:///run/tether.sock"].
	Group     string   // "group"/-G: group owning unix sockets.
	TLS       *bool    // "tls": nil = not given; false = plain TCP allowed (see TLSOn, PlainTCP)
	TLSVerify *bool    // "tlsverify": true = require client certificates (VerifyClients)
	TLSCACert string   // "tlscacert"
	TLSCert   string   // "tlscert"
	TLSKey    string   // "tlskey"

	// Cluster (overlay) store.
	ClusterStore     string            // "cluster-store"
	ClusterAdvertise string            // "cluster-advertise"
	ClusterStoreOpts map[string]string // "cluster-store-opts"

	// Docker's legacy network and IPAM plugin (docs/docker-plugin.md).
	DockerPlugin       bool   // "docker-plugin": serve the plugin sockets; default false.
	DockerPluginSocket string // "docker-plugin-socket": the "tether" plugin's socket; "tether-overlay.sock" is made beside it.
	DockerHost         string // "docker-host": the local dockerd's API (unix:///path or tcp://host:port).
	DockerPluginDNS    string // "docker-plugin-dns": IPv4 address (port 53) where Tether answers its names for Docker's resolver; "none" = off.

	// BridgeDriver is the driver of the default network "bridge": "bridge"
	// (a Linux bridge, default) or "ovs" (an Open vSwitch bridge, seed 001's
	// form; docs/ovs.md). "bridge-driver".
	BridgeDriver string

	// Open vSwitch networks (docs/ovs.md).
	OVSDB string // "ovs-db": the OVSDB socket of networks without -o ovs.db (unix:PATH); "" = unix:/run/openvswitch/db.sock.

	// Point-to-point links (docs/links.md).
	LinkPool netip.Prefix // "link-pool": IPv4 range links take a /31 from; default 10.254.0.0/16.

	// MetricsAddr is "metrics-addr": host:port of a plain-HTTP listener
	// serving only GET /metrics (Prometheus), as dockerd's; "" = none (the
	// API's own GET /metrics is always there).
	MetricsAddr string

	// Daemon housekeeping.
	DataRoot    string   // "data-root": default /var/lib/tether.
	ExecRoot    string   // "exec-root": default /run/tether.
	Pidfile     string   // "pidfile": default /run/tether.pid.
	Debug       bool     // "debug"/-D
	LogLevel    string   // "log-level": debug|info|warn|error|fatal, default info; debug when Debug.
	Labels      []string // "labels": key=value.
	LiveRestore bool     // "live-restore": always true (false is refused).

	// Warnings collected while loading (e.g. Docker keys outside networking that were ignored).
	Warnings []string
}
