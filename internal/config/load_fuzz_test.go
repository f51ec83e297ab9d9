package config

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/tether-net/tether/internal/store"
)

// FuzzLoadBytes feeds arbitrary daemon.json content, with at most one flag
// given too, to LoadBytes. Whatever the input: no panic; either an error or
// a Config that passes every check again (nothing invalid gets through the
// merge) and that loading the same input again gives exactly.
func FuzzLoadBytes(f *testing.F) {
	for _, s := range []struct{ file, flag, value string }{
		{``, ``, ``}, {`{}`, ``, ``}, {"\xef\xbb\xbf{}", ``, ``}, {`{"bip":"10.1.0.1/24","mtu":1400}`, ``, ``},
		{`{"bip":"10.1.0.0/24"}`, ``, ``}, {`{"fixed-cidr":"10.1.0.0/25","bip":"10.1.0.1/24"}`, ``, ``},
		{`{"default-address-pools":[{"base":"10.10.0.0/16","size":24}]}`, ``, ``},
		{`{"default-address-pools":[{"base":"10.10.0.0/16","size":33}]}`, ``, ``},
		{`{"hosts":["unix:///run/t.sock","tcp://127.0.0.1:2375"],"tls":false}`, ``, ``},
		{`{"dns":["1.1.1.1","::1"],"dns-search":["a b"]}`, ``, ``}, {`{"labels":["a=b","bad label"]}`, ``, ``},
		{`{"cluster-store":"etcd://127.0.0.1:2379,h:1/p","cluster-advertise":"eth0:2376"}`, ``, ``},
		{`{"cluster-store":"consul://x"}`, ``, ``}, {`{"cluster-store-opts":{"discovery.ttl":"x"}}`, ``, ``},
		{`{"log-level":"DEBUG","debug":true}`, ``, ``}, {`{"mtu":"1500"}`, ``, ``}, {`{"mtu":1e99}`, ``, ``},
		{`{"mtu":-1}`, ``, ``}, {`{"bogus":1}`, ``, ``}, {`{"storage-driver":"overlay2"}`, ``, ``},
		{`{"ipv6":true}`, ``, ``}, {`{"ipv6":true,"fixed-cidr-v6":"fd00:1::/64","bip6":"fd00:1::1/64","default-gateway-v6":"fd00:1::fe"}`, ``, ``},
		{`{"fixed-cidr-v6":"fd00:1::1/64"}`, `ipv6`, `true`}, {`{"iptables":false}`, `ip6tables`, `true`},
		{`{"default-address-pools":[{"base":"fd00::/48","size":64}]}`, ``, ``}, {``, `bip6`, `fd00::/64`}, {`[]`, ``, ``}, {`{"bip":"x"} {}`, ``, ``}, {`{"bip":`, ``, ``},
		{`{}`, `bip`, `10.2.0.1/16`}, {`{"bip":"10.1.0.1/24"}`, `bip`, `10.2.0.1/16`}, {``, `mtu`, `x`},
		{``, `default-address-pool`, `base=10.10.0.0/16,size=24`}, {``, `nope`, `1`}, {``, `icc`, `maybe`},
		{``, `host`, `tcp://0.0.0.0:2375`}, {``, `data-root`, `relative`},
	} {
		f.Add([]byte(s.file), s.flag, s.value)
	}
	f.Fuzz(func(t *testing.T, data []byte, flag, value string) {
		var flags FlagValues
		if flag != "" {
			flags = FlagValues{flag: strings.Split(value, "\n")}
		}
		c, err := LoadBytes("/etc/tether/daemon.json", data, flags)
		if err != nil {
			if c != nil {
				t.Fatalf("a Config with error %v", err)
			}
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if errs := validate(c); len(errs) > 0 {
			t.Fatalf("loaded config fails its own checks: %v (file %q, flag %q=%q)", errs, data, flag, value)
		}
		again, err := LoadBytes("/etc/tether/daemon.json", data, flags)
		if err != nil || !reflect.DeepEqual(c, again) {
			t.Fatalf("second load differs: %v\n%+v\n%+v", err, c, again)
		}
	})
}

// FuzzClusterStrings: cluster-store and cluster-advertise values. An
// accepted store URL has a known scheme and HOST:PORT endpoints; an
// accepted advertise value has a port in 1-65535 and either a reachable
// IPv4 address, a bracketed global IPv6 address or a name Linux accepts for
// an interface.
func FuzzClusterStrings(f *testing.F) {
	for _, s := range []string{"etcd://127.0.0.1:2379", "etcd://h1:2379,h2/prefix/", "zk://h", "consul://h:8500", "etcd://",
		"etcd:///p", "etcd://[::1]:2379", "etcd://h:0", "etcd://h:99999", "http://h", "eth0:2376", "10.0.0.1:2376", "127.0.0.1:1",
		"0.0.0.0:1", "[::1]:1", "[2001:db8::10]:2376", "[fe80::1%eth0]:1", "[::ffff:10.0.0.1]:1", "[10.0.0.1]:1", "[::]:1", "eth0:0", "a-very-long-interface-name:1", "eth 0:1", "eth/0:1", ":1", "eth0", "..:1", "[a:b]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if u, err := store.ParseURL(s, store.URLSchemes...); err == nil {
			if u.Scheme != "etcd" && u.Scheme != "zk" || len(u.Endpoints) == 0 {
				t.Fatalf("store.ParseURL(%q) = %+v", s, u)
			}
			for _, ep := range u.Endpoints {
				if i := strings.LastIndex(ep, ":"); i < 0 {
					t.Fatalf("store.ParseURL(%q): endpoint %q has no port", s, ep)
				} else if p, err := strconv.Atoi(ep[i+1:]); err != nil || p < 1 || p > 65535 {
					t.Fatalf("store.ParseURL(%q): endpoint %q has a bad port", s, ep)
				}
			}
		}
		a, err := ParseAdvertise(s)
		if err != nil {
			return
		}
		if a.Port < 1 || a.Port > 65535 {
			t.Fatalf("ParseAdvertise(%q): port %d", s, a.Port)
		}
		if a.Addr.IsValid() {
			v6 := a.Addr.Is6() && (a.Addr.Is4In6() || a.Addr.Zone() != "" || a.Addr.IsLinkLocalUnicast() || a.Addr.IsMulticast() || !strings.HasPrefix(s, "["))
			if v6 || a.Addr.IsLoopback() || a.Addr.IsUnspecified() || a.Interface != "" || a.Addr.Is4() && strings.HasPrefix(s, "[") {
				t.Fatalf("ParseAdvertise(%q) = %+v", s, a)
			}
			return
		}
		// the kernel's dev_valid_name
		n := a.Interface
		if n == "" || len(n) > 15 || n == "." || n == ".." || strings.ContainsFunc(n, func(r rune) bool {
			return r == '/' || r == ':' || r == 0 || unicode.IsSpace(r) || r > unicode.MaxASCII
		}) {
			t.Fatalf("ParseAdvertise(%q): %q is not a valid interface name", s, n)
		}
	})
}

// TestAdvertiseInterfaceNames: "..:1" and "[a:b]:1" (seeds of
// FuzzClusterStrings) were taken as interface names the kernel refuses.
func TestAdvertiseInterfaceNames(t *testing.T) {
	for _, s := range []string{"..:1", ".:1", "[a:b]:1", "eth\t0:1", "eth\x000:1", "\xa0eth:1", "abcdefghijklmnop:1"} {
		if a, err := ParseAdvertise(s); err == nil {
			t.Errorf("ParseAdvertise(%q) = %+v, want an error", s, a)
		}
	}
	for _, s := range []string{"eth0:2376", "br-1.100:1", "abcdefghijklmno:1"} {
		if _, err := ParseAdvertise(s); err != nil {
			t.Errorf("ParseAdvertise(%q): %v", s, err)
		}
	}
}
