package config

import (
	"net/netip"
	"reflect"
	"testing"
)

// The IPv6 keys of dockerd 28: values, defaults and flags.
func TestIPv6Keys(t *testing.T) {
	pfx, addr := netip.MustParsePrefix, netip.MustParseAddr
	tests := []struct {
		name  string
		file  string
		flags FlagValues
		want  func(c *Config) bool
	}{
		{"defaults", `{}`, nil, func(c *Config) bool {
			return !c.IPv6 && !c.FixedCIDRv6.IsValid() && !c.BIP6.IsValid() && !c.DefaultGatewayV6.IsValid() && c.IP6Tables
		}},
		{"ipv6 alone: subnet chosen", `{"ipv6": true}`, nil, func(c *Config) bool { return c.IPv6 && !c.FixedCIDRv6.IsValid() }},
		{"all keys from file", `{"ipv6": true, "fixed-cidr-v6": "fd00:1::/80", "bip6": "fd00:1::1/64", "default-gateway-v6": "fd00:1::fe", "ip6tables": true}`, nil,
			func(c *Config) bool {
				return c.IPv6 && c.FixedCIDRv6 == pfx("fd00:1::/80") && c.BIP6 == pfx("fd00:1::1/64") &&
					c.DefaultGatewayV6 == addr("fd00:1::fe") && c.IP6Tables
			}},
		{"all keys from flags", "", FlagValues{"ipv6": {"true"}, "fixed-cidr-v6": {"2001:db8:1::/64"}, "bip6": {"2001:db8:1::1/48"},
			"default-gateway-v6": {"2001:db8:1::1"}, "ip6tables": {"false"}},
			func(c *Config) bool {
				return c.IPv6 && c.FixedCIDRv6 == pfx("2001:db8:1::/64") && c.BIP6 == pfx("2001:db8:1::1/48") &&
					c.DefaultGatewayV6 == addr("2001:db8:1::1") && !c.IP6Tables
			}},
		{"bip6 keeps its host part", `{"ipv6": true, "bip6": "fd00:1::abcd/124"}`, nil, func(c *Config) bool { return c.BIP6 == pfx("fd00:1::abcd/124") }},
		{"gateway inside fixed-cidr-v6", `{"ipv6": true, "fixed-cidr-v6": "fd00:1::/64", "default-gateway-v6": "fd00:1::ffff"}`, nil,
			func(c *Config) bool { return c.DefaultGatewayV6 == addr("fd00:1::ffff") }},
		{"ip6tables off with iptables off when not given", `{"iptables": false}`, nil, func(c *Config) bool { return !c.IPTables && !c.IP6Tables }},
		{"ip6tables false with iptables false", `{"iptables": false, "ip6tables": false}`, nil, func(c *Config) bool { return !c.IP6Tables }},
		{"ip6tables flag off", "", FlagValues{"ip6tables": {"false"}}, func(c *Config) bool { return c.IPTables && !c.IP6Tables }},
		{"IPv6 pools accepted beside IPv4 ones", `{"default-address-pools": [{"base": "10.10.0.0/16", "size": 24}, {"base": "fd12:3456:789a::/48", "size": 64}]}`, nil,
			func(c *Config) bool {
				return reflect.DeepEqual(c.DefaultAddressPools, []AddressPool{{pfx("10.10.0.0/16"), 24}, {pfx("fd12:3456:789a::/48"), 64}})
			}},
		{"IPv6 pool from flag", "", FlagValues{"default-address-pool": {"base=fd00:aa::/32,size=124"}},
			func(c *Config) bool {
				return reflect.DeepEqual(c.DefaultAddressPools, []AddressPool{{pfx("fd00:aa::/32"), 124}})
			}},
		{"empty values keep defaults", `{"ipv6": false, "fixed-cidr-v6": "", "bip6": "", "default-gateway-v6": ""}`, nil,
			func(c *Config) bool {
				return !c.IPv6 && !c.FixedCIDRv6.IsValid() && !c.BIP6.IsValid() && !c.DefaultGatewayV6.IsValid()
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadString(tt.file, tt.flags)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

func TestIPv6Validation(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		flags FlagValues
		want  string
	}{
		{"fixed-cidr-v6 not CIDR", `{"ipv6": true, "fixed-cidr-v6": "fd00::"}`, nil, `fixed-cidr-v6: "fd00::" is not a CIDR`},
		{"fixed-cidr-v6 IPv4", `{"ipv6": true, "fixed-cidr-v6": "10.0.0.0/24"}`, nil, `fixed-cidr-v6: "10.0.0.0/24" is not an IPv6 CIDR`},
		{"fixed-cidr-v6 IPv4-mapped", `{"ipv6": true, "fixed-cidr-v6": "::ffff:10.0.0.0/120"}`, nil, `fixed-cidr-v6: "::ffff:10.0.0.0/120" is not an IPv6 CIDR`},
		{"fixed-cidr-v6 host bits", `{"ipv6": true, "fixed-cidr-v6": "fd00:1::1/64"}`, nil, "fixed-cidr-v6: fd00:1::1/64 has host bits set (did you mean fd00:1::/64?)"},
		{"fixed-cidr-v6 too short", `{"ipv6": true, "fixed-cidr-v6": "fd00::/47"}`, nil, "fixed-cidr-v6: fd00::/47: the prefix length must be between /48 and /124"},
		{"fixed-cidr-v6 too long", `{"ipv6": true, "fixed-cidr-v6": "fd00::/125"}`, nil, "fixed-cidr-v6: fd00::/125: the prefix length must be between /48 and /124"},
		{"fixed-cidr-v6 without ipv6", `{"fixed-cidr-v6": "fd00::/64"}`, nil, `fixed-cidr-v6: needs "ipv6": true (--ipv6)`},
		{"fixed-cidr-v6 with ipv6 false", `{"ipv6": false, "fixed-cidr-v6": "fd00::/64"}`, nil, `fixed-cidr-v6: needs "ipv6": true`},
		{"fixed-cidr-v6 flag without ipv6", "", FlagValues{"fixed-cidr-v6": {"fd00::/64"}}, `fixed-cidr-v6: needs "ipv6": true`},
		{"fixed-cidr-v6 without default network", `{"ipv6": true, "fixed-cidr-v6": "fd00::/64", "bridge": "none"}`, nil, `fixed-cidr-v6: needs the default network, but bridge is "none"`},
		{"fixed-cidr-v6 outside bip6", `{"ipv6": true, "fixed-cidr-v6": "fd00:2::/64", "bip6": "fd00:1::1/64"}`, nil, "fixed-cidr-v6: fd00:2::/64 is not inside bip6's subnet fd00:1::/64"},
		{"fixed-cidr-v6 larger than bip6", `{"ipv6": true, "fixed-cidr-v6": "fd00:1::/56", "bip6": "fd00:1::1/64"}`, nil, "fixed-cidr-v6: fd00:1::/56 is not inside bip6's subnet"},
		{"bip6 not CIDR", `{"ipv6": true, "bip6": "fd00::1"}`, nil, `bip6: "fd00::1" is not a CIDR`},
		{"bip6 IPv4", `{"ipv6": true, "bip6": "10.1.0.1/24"}`, nil, `bip6: "10.1.0.1/24" is not an IPv6 CIDR`},
		{"bip6 too long", `{"ipv6": true, "bip6": "fd00::1/127"}`, nil, "bip6: fd00::1/127: the prefix length must be between /48 and /124"},
		{"bip6 anycast", `{"ipv6": true, "bip6": "fd00:1::/64"}`, nil, "bip6: fd00:1::/64 is the subnet-router anycast address; give the bridge's own address, e.g. fd00:1::1/64"},
		{"bip6 without ipv6", `{"bip6": "fd00:1::1/64"}`, nil, `bip6: needs "ipv6": true (--ipv6)`},
		{"bip6 with bridge", `{"ipv6": true, "bip6": "fd00:1::1/64", "bridge": "br0"}`, nil, "bip6: you specified -b & --bip6, mutually exclusive options"},
		{"default-gateway-v6 not an address", `{"ipv6": true, "default-gateway-v6": "gw"}`, nil, `default-gateway-v6: "gw" is not an IP address`},
		{"default-gateway-v6 IPv4", `{"ipv6": true, "default-gateway-v6": "10.0.0.1"}`, nil, "default-gateway-v6: 10.0.0.1 is not an IPv6 address"},
		{"default-gateway-v6 with zone", `{"ipv6": true, "default-gateway-v6": "fe80::1%eth0"}`, nil, `default-gateway-v6: "fe80::1%eth0" is not an IP address`},
		{"default-gateway-v6 without ipv6", `{"default-gateway-v6": "fd00::1"}`, nil, `default-gateway-v6: needs "ipv6": true`},
		{"default-gateway-v6 outside fixed-cidr-v6", `{"ipv6": true, "fixed-cidr-v6": "fd00:1::/64", "default-gateway-v6": "fd00:2::1"}`, nil,
			"default-gateway-v6: fd00:2::1 is not inside fixed-cidr-v6 fd00:1::/64"},
		{"default-gateway-v6 outside bip6", `{"ipv6": true, "bip6": "fd00:1::1/64", "default-gateway-v6": "fd00:2::1"}`, nil,
			"default-gateway-v6: fd00:2::1 is not inside bip6's subnet fd00:1::/64"},
		{"ip6tables true with iptables false", `{"iptables": false, "ip6tables": true}`, nil, "ip6tables: ip6tables cannot be enabled when iptables is disabled"},
		{"ip6tables flag with iptables false", `{"iptables": false}`, FlagValues{"ip6tables": {"true"}}, "ip6tables: ip6tables cannot be enabled when iptables is disabled"},
		{"ipv6 not a boolean", `{"ipv6": "yes"}`, nil, "ipv6: expected boolean, got string"},
		{"ipv6 flag not a boolean", "", FlagValues{"ipv6": {"maybe"}}, "ipv6: invalid --ipv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadString(tt.file, tt.flags)
			wantErr(t, err, tt.want)
		})
	}
}

func TestIPv6Conflicts(t *testing.T) {
	tests := []struct {
		file  string
		flags FlagValues
		want  string
	}{
		{`{"ipv6": true}`, FlagValues{"ipv6": {"true"}}, "ipv6: (from flag: true, from file: true)"},
		{`{"ipv6": true, "fixed-cidr-v6": "fd00::/64"}`, FlagValues{"fixed-cidr-v6": {"fd00:1::/64"}}, "fixed-cidr-v6: (from flag: fd00:1::/64, from file: fd00::/64)"},
		{`{"ipv6": true, "bip6": "fd00::1/64"}`, FlagValues{"bip6": {"fd00:1::1/64"}}, "bip6: (from flag: fd00:1::1/64, from file: fd00::1/64)"},
		{`{"default-gateway-v6": "fd00::1"}`, FlagValues{"default-gateway-v6": {"fd00::2"}}, "default-gateway-v6: (from flag: fd00::2, from file: fd00::1)"},
		{`{"ip6tables": false}`, FlagValues{"ip6tables": {"true"}}, "ip6tables: (from flag: true, from file: false)"},
	}
	for _, tt := range tests {
		_, err := loadString(tt.file, tt.flags)
		wantErr(t, err, "specified both as a flag and in the configuration file", tt.want)
	}
}
