package config

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func loadString(file string, flags FlagValues) (*Config, error) {
	var data []byte
	if file != "" {
		data = []byte(file)
	}
	return LoadBytes("/etc/tether/daemon.json", data, flags)
}

// wantErr fails unless err contains every part.
func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}

func TestDefaults(t *testing.T) {
	want := &Config{
		MTU: 1500, IP: netip.MustParseAddr("0.0.0.0"),
		ICC: true, IPForward: true, IPMasq: true, IPTables: true, IP6Tables: true, UserlandProxy: true,
		Hosts:    []string{"unix:///run/tether.sock"},
		DataRoot: "/var/lib/tether", ExecRoot: "/run/tether", Pidfile: "/run/tether.pid",
		DockerPluginSocket: "/run/docker/plugins/tether.sock", DockerHost: "unix:///var/run/docker.sock", DockerPluginDNS: "169.254.77.77", LinkPool: netip.MustParsePrefix("10.254.0.0/16"), BridgeDriver: "bridge",
		LogLevel: "info", LiveRestore: true,
	}
	for _, file := range []string{"", "{}", "  \n", "\xef\xbb\xbf{}",
		`{"mtu": 0, "ip": "", "hosts": [], "data-root": "", "log-level": "", "dns": [], "default-address-pools": []}`} {
		got, err := loadString(file, nil)
		if err != nil {
			t.Fatalf("%q: %v", file, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q:\n got %+v\nwant %+v", file, got, want)
		}
	}
}

func TestMerge(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		flags FlagValues
		check func(c *Config) bool
	}{
		{"file and flag both apply", `{"bip": "10.1.0.1/24"}`, FlagValues{"mtu": {"9000"}},
			func(c *Config) bool { return c.BIP == "10.1.0.1/24" && c.MTU == 9000 }},
		{"file false beats true default", `{"icc": false, "ip-forward": false}`, nil,
			func(c *Config) bool { return !c.ICC && !c.IPForward }},
		{"flag false beats true default", "", FlagValues{"icc": {"false"}},
			func(c *Config) bool { return !c.ICC }},
		{"repeated flag accumulates", "", FlagValues{"dns": {"8.8.8.8", "2001:4860::8888"}, "label": {"a=1", "b=2"}},
			func(c *Config) bool {
				return len(c.DNS) == 2 && c.DNS[1] == netip.MustParseAddr("2001:4860::8888") && len(c.Labels) == 2
			}},
		{"repeated scalar flag keeps last", "", FlagValues{"mtu": {"1400", "1450"}},
			func(c *Config) bool { return c.MTU == 1450 }},
		{"pools from file", `{"default-address-pools": [{"base": "10.10.0.0/16", "size": 24}, {"base": "10.20.1.0/16", "size": 20}]}`, nil,
			func(c *Config) bool {
				return len(c.DefaultAddressPools) == 2 && c.DefaultAddressPools[1].Base == netip.MustParsePrefix("10.20.0.0/16") &&
					c.DefaultAddressPools[1].Size == 20
			}},
		{"pools from flag", "", FlagValues{"default-address-pool": {"base=10.10.0.0/16,size=24"}},
			func(c *Config) bool {
				return reflect.DeepEqual(c.DefaultAddressPools, []AddressPool{{netip.MustParsePrefix("10.10.0.0/16"), 24}})
			}},
		{"file lists", `{"dns": ["1.1.1.1"], "dns-search": ["example.com"], "dns-opts": ["ndots:2"], "labels": ["x=y"]}`, nil,
			func(c *Config) bool {
				return c.DNS[0] == netip.MustParseAddr("1.1.1.1") && c.DNSSearch[0] == "example.com" &&
					c.DNSOpts[0] == "ndots:2" && c.Labels[0] == "x=y"
			}},
		{"debug implies log-level debug", `{"debug": true, "log-level": "error"}`, nil,
			func(c *Config) bool { return c.Debug && c.LogLevel == "debug" }},
		{"log-level is case-insensitive", "", FlagValues{"log-level": {"WARN"}},
			func(c *Config) bool { return c.LogLevel == "warn" }},
		{"bare unix:// is the default socket", `{"hosts": ["unix://", "unix:///tmp/t.sock"]}`, nil,
			func(c *Config) bool { return reflect.DeepEqual(c.Hosts, []string{DefaultHost, "unix:///tmp/t.sock"}) }},
		{"bridge none", `{"bridge": "none"}`, nil, func(c *Config) bool { return c.Bridge == "none" }},
		{"allow-direct-routing from file", `{"allow-direct-routing": true}`, nil, func(c *Config) bool { return c.AllowDirectRouting }},
		{"allow-direct-routing from flag", "", FlagValues{"allow-direct-routing": {"true"}}, func(c *Config) bool { return c.AllowDirectRouting }},
		{"forward-accept-other-tables from file", `{"forward-accept-other-tables": true}`, nil, func(c *Config) bool { return c.ForwardAcceptOtherTables }},
		{"forward-accept-other-tables from flag", "", FlagValues{"forward-accept-other-tables": {"true"}}, func(c *Config) bool { return c.ForwardAcceptOtherTables }},
		{"forward-accept-other-tables off by default", `{}`, nil, func(c *Config) bool { return !c.ForwardAcceptOtherTables }},
		{"fixed-cidr inside bip", `{"bip": "10.1.0.1/16", "fixed-cidr": "10.1.2.0/24", "default-gateway": "10.1.0.254"}`, nil,
			func(c *Config) bool { return c.FixedCIDR == "10.1.2.0/24" && c.DefaultGateway.IsValid() }},
		{"group and paths", "", FlagValues{"group": {"tether"}, "data-root": {"/srv/t"}, "exec-root": {"/run/t"}, "pidfile": {"/run/t.pid"}},
			func(c *Config) bool {
				return c.Group == "tether" && c.DataRoot == "/srv/t" && c.ExecRoot == "/run/t" && c.Pidfile == "/run/t.pid"
			}},
		{"empty dockerd sample keys accepted", `{"cluster-store": "", "cluster-store-opts": {}, "tls": false, "tlscacert": "",
			"ipv6": false, "fixed-cidr-v6": "", "default-gateway-v6": "", "ip-masq": false, "iptables": false}`, nil,
			func(c *Config) bool { return !c.IPMasq && !c.IPTables && c.TLS != nil && !*c.TLS }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadString(tt.file, tt.flags)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

func TestConflicts(t *testing.T) {
	tests := []struct {
		file  string
		flags FlagValues
		want  string
	}{
		{`{"bip": "10.2.0.1/24"}`, FlagValues{"bip": {"10.1.0.1/24"}},
			"the following directives are specified both as a flag and in the configuration file: bip: (from flag: 10.1.0.1/24, from file: 10.2.0.1/24)"},
		{`{"bridge": "br0"}`, FlagValues{"bridge": {"br1"}}, "bridge: (from flag: br1, from file: br0)"},
		{`{"mtu": 1400}`, FlagValues{"mtu": {"9000"}}, "mtu: (from flag: 9000, from file: 1400)"},
		{`{"dns": ["1.1.1.1"]}`, FlagValues{"dns": {"8.8.8.8"}}, "dns: (from flag: [8.8.8.8], from file: [1.1.1.1])"},
		{`{"dns-opts": ["ndots:1"]}`, FlagValues{"dns-opt": {"ndots:2"}}, "dns-opts: (from flag: [ndots:2], from file: [ndots:1])"},
		{`{"labels": ["a=1"]}`, FlagValues{"label": {"b=2"}}, "labels: (from flag: [b=2], from file: [a=1])"},
		{`{"hosts": ["unix:///a"]}`, FlagValues{"host": {"unix:///b"}}, "hosts: (from flag: [unix:///b], from file: [unix:///a])"},
		{`{"group": "adm"}`, FlagValues{"group": {"daemon"}}, "group: (from flag: daemon, from file: adm)"},
		{`{"tls": false}`, FlagValues{"tls": {"false"}}, "tls: (from flag: false, from file: false)"},
		{`{"tlsverify": true}`, FlagValues{"tlsverify": {"true"}}, "tlsverify: (from flag: true, from file: true)"},
		{`{"tlscacert": "/a/ca.pem"}`, FlagValues{"tlscacert": {"/b/ca.pem"}}, "tlscacert: (from flag: /b/ca.pem, from file: /a/ca.pem)"},
		{`{"tlscert": "/a/cert.pem"}`, FlagValues{"tlscert": {"/b/cert.pem"}}, "tlscert: (from flag: /b/cert.pem, from file: /a/cert.pem)"},
		{`{"tlskey": "/a/key.pem"}`, FlagValues{"tlskey": {"/b/key.pem"}}, "tlskey: (from flag: /b/key.pem, from file: /a/key.pem)"},
		{`{"hosts": ["tcp://0.0.0.0:2376"], "tlscert": "/c", "tlskey": "/k"}`, FlagValues{"host": {"tcp://0.0.0.0:2376"}, "tlskey": {"/k"}},
			"hosts: (from flag: [tcp://0.0.0.0:2376], from file: [tcp://0.0.0.0:2376]), tlskey: (from flag: /k, from file: /k)"},
		{`{"default-address-pools": []}`, FlagValues{"default-address-pool": {"base=10.0.0.0/8,size=24"}}, "default-address-pools: (from flag: [base=10.0.0.0/8,size=24]"},
		{`{"cluster-store-opts": {}}`, FlagValues{"cluster-store-opt": {"a=b"}}, "cluster-store-opts: (from flag: [a=b]"},
		{`{"debug": false}`, FlagValues{"debug": {"true"}}, "debug: (from flag: true, from file: false)"},
		{`{"mtu": 1400, "bip": "10.2.0.1/24", "icc": true}`, FlagValues{"mtu": {"9000"}, "icc": {"false"}, "bip": {"10.1.0.1/24"}},
			"file: bip: (from flag: 10.1.0.1/24, from file: 10.2.0.1/24), icc: (from flag: false, from file: true), mtu: (from flag: 9000, from file: 1400)"},
	}
	for _, tt := range tests {
		_, err := loadString(tt.file, tt.flags)
		wantErr(t, err, tt.want)
	}
}

func TestFileErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string
	}{
		{"unknown key", `{"bip": "10.1.0.1/24", "frobnicate": 1, "zz": 2}`,
			[]string{`config file "/etc/tether/daemon.json"`, "the following directives don't match any configuration option: frobnicate, zz"}},
		{"malformed JSON", `{"bip": }`, []string{`config file "/etc/tether/daemon.json": invalid JSON`}},
		{"trailing data", `{} {}`, []string{"/etc/tether/daemon.json", "invalid JSON"}},
		{"not an object", `["bip"]`, []string{"/etc/tether/daemon.json", "expected a JSON object, got array"}},
		{"int as string", `{"mtu": "1500"}`, []string{"mtu: expected integer, got string"}},
		{"int as float", `{"mtu": 1500.5}`, []string{"mtu: expected integer, got 1500.5"}},
		{"bool as string", `{"icc": "yes"}`, []string{"icc: expected boolean, got string"}},
		{"string as number", `{"bip": 10}`, []string{"bip: expected string, got number"}},
		{"null", `{"bridge": null}`, []string{"bridge: expected string, got null"}},
		{"list as string", `{"dns": "8.8.8.8"}`, []string{"dns: expected array of strings, got string"}},
		{"list element", `{"labels": ["a=b", 3]}`, []string{"labels: element 1: expected string, got number"}},
		{"map as list", `{"cluster-store-opts": []}`, []string{"cluster-store-opts: expected object, got array"}},
		{"map value", `{"cluster-store-opts": {"a": 1}}`, []string{`cluster-store-opts: "a": expected string, got number`}},
		{"pool as object", `{"default-address-pools": {"base": "10.0.0.0/8"}}`, []string{"default-address-pools: expected array"}},
		{"pool size string", `{"default-address-pools": [{"base": "10.0.0.0/8", "size": "24"}]}`,
			[]string{`default-address-pools: element 0: "size": expected integer, got string`}},
		{"pool unknown field", `{"default-address-pools": [{"base": "10.0.0.0/8", "size": 24, "x": 1}]}`,
			[]string{`default-address-pools: element 0: "x": unknown field`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadString(tt.file, nil)
			wantErr(t, err, tt.want...)
		})
	}
}

func TestDockerKeysWarning(t *testing.T) {
	c, err := loadString(`{"storage-driver": "overlay2", "log-driver": "json-file", "log-opts": {"max-size": "10m"}, "mtu": 1400}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ignoring Docker options outside networking: log-driver, log-opts, storage-driver"}
	if !reflect.DeepEqual(c.Warnings, want) || c.MTU != 1400 {
		t.Errorf("warnings %q, mtu %d; want %q, 1400", c.Warnings, c.MTU, want)
	}
}

func TestFlagErrors(t *testing.T) {
	tests := []struct {
		flags FlagValues
		want  string
	}{
		{FlagValues{"mtu": {"big"}}, "mtu: invalid --mtu"},
		{FlagValues{"icc": {"maybe"}}, "icc: invalid --icc"},
		{FlagValues{"cluster-store-opt": {"novalue"}}, `cluster-store-opts: invalid --cluster-store-opt: "novalue": expected key=value`},
		{FlagValues{"default-address-pool": {"base=10.0.0.0/8,bits=24"}}, `"bits": unknown field`},
		{FlagValues{"default-address-pool": {"base=10.0.0.0/8,size=x"}}, `invalid --default-address-pool`},
		{FlagValues{"no-such-flag": {"x"}}, `unknown flag "no-such-flag"`},
	}
	for _, tt := range tests {
		_, err := loadString("", tt.flags)
		wantErr(t, err, tt.want)
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name string
		file string
		want string
	}{
		{"bip not CIDR", `{"bip": "10.1.0.1"}`, `bip: "10.1.0.1" is not an IPv4 CIDR`},
		{"bip IPv6", `{"bip": "fd00::1/64"}`, "bip: "},
		{"bip network address", `{"bip": "10.1.0.0/24"}`, `bip: "10.1.0.0/24" is the network address; give the bridge's own address, e.g. 10.1.0.1/24`},
		{"bip broadcast", `{"bip": "10.1.0.255/24"}`, "bip: \"10.1.0.255/24\" is the broadcast address"},
		{"bip too small", `{"bip": "10.1.0.1/31"}`, "leaves no addresses for sandboxes"},
		{"bip with bridge", `{"bip": "10.1.0.1/24", "bridge": "br0"}`, "bip: you specified -b & --bip, mutually exclusive options"},
		{"bridge name too long", `{"bridge": "abcdefghijklmnop"}`, `bridge: "abcdefghijklmnop" is not a valid interface name`},
		{"bridge name slash", `{"bridge": "br/0"}`, "bridge: "},
		{"fixed-cidr not CIDR", `{"fixed-cidr": "10.1.0.0"}`, `fixed-cidr: "10.1.0.0" is not an IPv4 CIDR`},
		{"fixed-cidr without default network", `{"fixed-cidr": "10.1.0.0/24", "bridge": "none"}`, `fixed-cidr: needs the default network, but bridge is "none"`},
		{"fixed-cidr outside bip", `{"fixed-cidr": "10.2.0.0/24", "bip": "10.1.0.1/16"}`, "fixed-cidr: 10.2.0.0/24 is not inside bip's subnet 10.1.0.0/16"},
		{"fixed-cidr larger than bip", `{"fixed-cidr": "10.0.0.0/8", "bip": "10.1.0.1/16"}`, "fixed-cidr: "},
		{"mtu too small", `{"mtu": 67}`, "mtu: 67 is out of range 68..65535"},
		{"mtu too large", `{"mtu": 65536}`, "mtu: 65536 is out of range"},
		{"mtu negative", `{"mtu": -1}`, "mtu: -1 is out of range"},
		{"docker-plugin-socket relative", `{"docker-plugin-socket": "run/tether.sock"}`, "docker-plugin-socket: "},
		{"docker-plugin-socket suffix", `{"docker-plugin-socket": "/run/docker/plugins/tether"}`, "docker-plugin-socket: \"/run/docker/plugins/tether\": dockerd finds plugin sockets by name: give NAME.sock"},
		{"docker-host scheme", `{"docker-host": "http://x"}`, `docker-host: "http://x": want unix:///path or tcp://host:port`},
		{"docker-host tcp port", `{"docker-host": "tcp://x"}`, `docker-host: "tcp://x": `},
		{"docker-plugin-dns name", `{"docker-plugin-dns": "dns.local"}`, `docker-plugin-dns: "dns.local": want an IPv4 address`},
		{"bridge-driver", `{"bridge-driver": "macvlan"}`, `bridge-driver: "macvlan": want bridge or ovs`},
		{"ovs-db tcp", `{"ovs-db": "tcp:127.0.0.1:6640"}`, `ovs-db: "tcp:127.0.0.1:6640": want unix:/absolute/path`},
		{"ovs-db relative", `{"ovs-db": "unix:db.sock"}`, `ovs-db: "unix:db.sock": want unix:/absolute/path`},
		{"link-pool not CIDR", `{"link-pool": "10.254.0.0"}`, `link-pool: "10.254.0.0" is not a CIDR`},
		{"link-pool v6", `{"link-pool": "fd00::/64"}`, `link-pool: "fd00::/64": want an IPv4 CIDR`},
		{"link-pool host bits", `{"link-pool": "10.254.0.1/16"}`, `link-pool: "10.254.0.1/16": host bits set`},
		{"link-pool /32", `{"link-pool": "10.254.0.1/32"}`, `link-pool: "10.254.0.1/32": want a prefix length`},
		{"docker-plugin-dns v6", `{"docker-plugin-dns": "::1"}`, `docker-plugin-dns: "::1": want an IPv4 address`},
		{"docker-plugin-dns loopback", `{"docker-plugin-dns": "127.0.0.77"}`, `docker-plugin-dns: "127.0.0.77": dockerd dials daemon.json "dns" from each container's namespace`},
		{"ip", `{"ip": "1.2.3"}`, `ip: "1.2.3" is not an IP address`},
		{"default-gateway", `{"default-gateway": "gw"}`, `default-gateway: "gw" is not an IP address`},
		{"default-gateway IPv6", `{"default-gateway": "fd00::1"}`, "default-gateway: fd00::1 is not an IPv4 address"},
		{"dns", `{"dns": ["8.8.8.8", "dns.google"]}`, `dns: "dns.google" is not an IP address`},
		{"pool base", `{"default-address-pools": [{"base": "10.0.0.0", "size": 24}]}`, `default-address-pools: base "10.0.0.0" is not a CIDR`},
		{"pool base missing", `{"default-address-pools": [{"size": 24}]}`, `default-address-pools: base "" is not a CIDR`},
		{"pool size below base", `{"default-address-pools": [{"base": "10.0.0.0/16", "size": 8}]}`, "default-address-pools: base 10.0.0.0/16: size 8 is out of range 16..32"},
		{"pool size above 32", `{"default-address-pools": [{"base": "10.0.0.0/16", "size": 33}]}`, "size 33 is out of range"},
		{"pool IPv6 size below 48", `{"default-address-pools": [{"base": "fd00::/8", "size": 40}]}`, "default-address-pools: base fd00::/8: size 40 is out of range 48..124"},
		{"pool IPv6 size below base", `{"default-address-pools": [{"base": "fd00:1:2::/56", "size": 52}]}`, "default-address-pools: base fd00:1:2::/56: size 52 is out of range 56..124"},
		{"pool IPv6 size above 124", `{"default-address-pools": [{"base": "fd00::/48", "size": 125}]}`, "size 125 is out of range 48..124"},
		{"pool IPv4-mapped", `{"default-address-pools": [{"base": "::ffff:10.0.0.0/104", "size": 120}]}`, "default-address-pools: base ::ffff:10.0.0.0/104 is not an IPv4 or IPv6 CIDR"},
		{"log-level", `{"log-level": "trace"}`, `log-level: "trace" is not one of debug, info, warn, error, fatal`},
		{"label", `{"labels": ["a=b", "nolabel"]}`, `labels: "nolabel" is not key=value`},
		{"label empty key", `{"labels": ["=b"]}`, `labels: "=b" is not key=value`},
		{"host scheme", `{"hosts": ["http://x"]}`, `hosts: "http://x": unknown scheme "http" (want unix:///path, tcp://host:port or fd://)`},
		{"host relative unix", `{"hosts": ["unix://run/t.sock"]}`, `hosts: "unix://run/t.sock": the socket path must be absolute`},
		{"data-root relative", `{"data-root": "var/lib"}`, `data-root: "var/lib" is not an absolute path`},
		{"exec-root relative", `{"exec-root": "run"}`, "exec-root: "},
		{"pidfile relative", `{"pidfile": "t.pid"}`, "pidfile: "},
		{"dns-search blank", `{"dns-search": ["a b"]}`, `dns-search: "a b" must be one non-empty word`},
		{"dns-opts empty", `{"dns-opts": [""]}`, "dns-opts: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadString(tt.file, nil)
			wantErr(t, err, tt.want)
		})
	}
}

func TestNotSupported(t *testing.T) {
	tests := []struct {
		file  string
		flags FlagValues
		key   string
	}{
		{`{"cluster-store": "consul://10.0.0.1:8500"}`, nil, "cluster-store"},
		{"", FlagValues{"live-restore": {"false"}}, "live-restore"},
		{`{"default-network-opts": {"bridge": {"a": "b"}}}`, nil, "default-network-opts"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			_, err := loadString(tt.file, tt.flags)
			wantErr(t, err, tt.key+": not supported yet (")
			if !errors.Is(err, ErrNotSupported) {
				t.Errorf("%v is not ErrNotSupported", err)
			}
		})
	}
}

// TestSupportedValues covers the values the not-supported rows let through.
func TestSupportedValues(t *testing.T) {
	for _, file := range []string{
		`{"ip-masq": false, "iptables": false}`,
		`{"ip-masq": true, "iptables": true, "ip-forward": false}`,
		`{"live-restore": true}`,
		`{"tls": false, "tlsverify": false}`,
		`{"hosts": ["unix:///run/a.sock", "unix:///run/b.sock"]}`,
		`{"ipv6": false, "ip6tables": false, "bip6": ""}`,
	} {
		if _, err := loadString(file, nil); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
}

// Cluster keys: the URL forms, advertise forms and options, each error
// naming its key.
func TestClusterKeys(t *testing.T) {
	for _, tt := range []struct {
		file string
		want string // "" = valid
	}{
		{`{"cluster-store": "etcd://10.0.0.1:2379", "cluster-advertise": "eth0:2376"}`, ""},
		{`{"cluster-store": "etcd://a:2379,b:2379,c:2379/tether", "cluster-advertise": "198.18.0.10:2376"}`, ""},
		{`{"cluster-store": "zk://z1:2181,z2:2181", "cluster-advertise": "eth0:2376", "cluster-store-opts": {"discovery.ttl": "5"}}`, ""},
		{`{"cluster-store": "etcd://a:2379", "cluster-advertise": "eth0:2376", "cluster-store-opts": {"kv.cacertfile": "/ca.pem", "kv.certfile": "/c.pem", "kv.keyfile": "/k.pem"}}`, ""},
		{`{"cluster-store": "consul://a:8500", "cluster-advertise": "eth0:2376"}`, "cluster-store: not supported yet (no Consul server"},
		{`{"cluster-store": "redis://a:1", "cluster-advertise": "eth0:2376"}`, `cluster-store: "redis://a:1": unknown scheme "redis"`},
		{`{"cluster-store": "etcd://", "cluster-advertise": "eth0:2376"}`, "cluster-store: \"etcd://\": empty host"},
		{`{"cluster-store": "etcd://a:99999", "cluster-advertise": "eth0:2376"}`, `port "99999" is not 1-65535`},
		// The check is the parser the daemon opens the store with
		// (store.ParseURL): these passed here before and failed at start.
		{`{"cluster-store": "etcd://user:pw@a:2379", "cluster-advertise": "eth0:2376"}`, `cluster-store: "etcd://user:pw@a:2379": unexpected '@'`},
		{`{"cluster-store": "zk://a/x/../y", "cluster-advertise": "eth0:2376"}`, `prefix "x/../y": empty, . or .. segment`},
		{`{"cluster-store": "etcd://a/p?x=1", "cluster-advertise": "eth0:2376"}`, `unexpected '?'`},
		{`{"cluster-store": "etcd://a", "cluster-advertise": "eth0:2376"}`, ""}, // default port 2379
		{`{"cluster-store": "etcd://a:2379"}`, "cluster-advertise: required with cluster-store"},
		{`{"cluster-advertise": "eth0:2376"}`, "cluster-advertise: given without cluster-store"},
		{`{"cluster-store": "etcd://a:2379", "cluster-advertise": "eth0"}`, "cluster-advertise: \"eth0\": want IFACE:PORT, IP:PORT or [IPv6]:PORT"},
		{`{"cluster-store": "etcd://a:2379", "cluster-advertise": "[2001:db8::10]:2376"}`, ""},
		{`{"cluster-store": "etcd://a:2379", "cluster-advertise": "[fe80::1]:2376"}`, "cluster-advertise: \"[fe80::1]:2376\": the address must be a global IPv6 address"},
		{`{"cluster-store": "etcd://a:2379", "cluster-advertise": "127.0.0.1:2376"}`, "cluster-advertise: \"127.0.0.1:2376\": the address must be"},
		{`{"cluster-store": "etcd://a:2379", "cluster-advertise": "eth0:x"}`, "cluster-advertise: \"eth0:x\": bad port"},
		{`{"cluster-store": "etcd://a:2379", "cluster-advertise": "eth0:2376", "cluster-store-opts": {"kv.path": "/x"}}`, "cluster-store-opts: unknown option \"kv.path\""},
		{`{"cluster-store": "etcd://a:2379", "cluster-advertise": "eth0:2376", "cluster-store-opts": {"discovery.ttl": "0"}}`, "cluster-store-opts: discovery.ttl=\"0\""},
	} {
		_, err := loadString(tt.file, nil)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.file, err)
			}
			continue
		}
		wantErr(t, err, tt.want)
	}
}

// TestAllErrorsReported checks that independent problems come back together.
func TestAllErrorsReported(t *testing.T) {
	_, err := loadString(`{"mtu": 10, "log-level": "loud", "tls": true, "cluster-store": "etcd://x:0"}`, nil)
	wantErr(t, err, "mtu: ", "log-level: ", "tls: true needs tlscert", `cluster-store: "etcd://x:0": endpoint "x:0": port "0" is not 1-65535`)
}
