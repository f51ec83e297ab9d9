package resolvconf

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func equal(a, b File) bool {
	return slices.Equal(a.Nameservers, b.Nameservers) && slices.Equal(a.Search, b.Search) && slices.Equal(a.Options, b.Options)
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		want          File
	}{
		{"empty", "", File{}},
		{"comments and junk",
			"# comment\n; comment\n#nameserver 192.0.2.9\nbogus\nnameserver\nsortlist 10.0.0.0\nnameserver 192.0.2.1 # trailing\n",
			File{Nameservers: addrs("192.0.2.1")}},
		{"the engine's old case",
			"# comment\nnameserver 10.0.0.53\nnameserver 127.0.0.53\nsearch a.example b.example\noptions ndots:2 edns0\noptions rotate\nbogus\n",
			File{Nameservers: addrs("10.0.0.53", "127.0.0.53"), Search: []string{"a.example", "b.example"}, Options: []string{"ndots:2", "edns0", "rotate"}}},
		{"bad addresses skipped, mapped unmapped, v6 and zones kept",
			"nameserver bogus\nnameserver ::ffff:192.0.2.7\nnameserver 2001:db8::53\nnameserver fe80::1%eth0\nnameserver 192.0.2.300\n",
			File{Nameservers: addrs("192.0.2.7", "2001:db8::53", "fe80::1%eth0")}},
		{"last search or domain wins", "search a.example\ndomain b.example\n", File{Search: []string{"b.example"}}},
		{"domain then search", "domain b.example\nsearch c.example d.example\n", File{Search: []string{"c.example", "d.example"}}},
		{"tabs", "nameserver\t192.0.2.1\noptions\tedns0\t trust-ad\n", File{Nameservers: addrs("192.0.2.1"), Options: []string{"edns0", "trust-ad"}}},
	} {
		got, err := Parse(strings.NewReader(tc.content))
		if err != nil || !equal(got, tc.want) {
			t.Errorf("%s: Parse = %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

func TestReadMissing(t *testing.T) {
	if _, err := Read(filepath.Join(t.TempDir(), "missing")); !os.IsNotExist(err) {
		t.Errorf("Read(missing): err = %v, want not-exist", err)
	}
}

// TestHost is the systemd-resolved rule, one row per case the two old
// copies (engine, resolver) decided differently or alike.
func TestHost(t *testing.T) {
	systemd := "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch lan.example\n"
	sdFile := File{Nameservers: addrs("192.0.2.53", "2001:db8::53"), Search: []string{"lan.example"}}
	for _, tc := range []struct {
		name    string
		host    string // "" with missing: no host file
		systemd string // "-": no systemd file
		want    File
	}{
		{"plain host file", "nameserver 192.0.2.1\nsearch x.example\n", systemd,
			File{Nameservers: addrs("192.0.2.1"), Search: []string{"x.example"}}},
		{"stub: the systemd file whole", "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch x.example\n", systemd, sdFile},
		// The resolver followed; the engine did not (two lines).
		{"stub twice", "nameserver 127.0.0.53\nnameserver 127.0.0.53\n", systemd, sdFile},
		// Both: a bad line is no server.
		{"stub and a bad line", "nameserver 127.0.0.53\nnameserver bogus\n", systemd, sdFile},
		{"stub and a real server", "nameserver 127.0.0.53\nnameserver 192.0.2.1\n", systemd,
			File{Nameservers: addrs("127.0.0.53", "192.0.2.1")}},
		{"another loopback is not the stub", "nameserver 127.0.0.1\n", systemd, File{Nameservers: addrs("127.0.0.1")}},
		// The engine kept the host file; the resolver took the empty one.
		{"stub, no systemd file", "nameserver 127.0.0.53\nsearch x.example\n", "-",
			File{Nameservers: addrs("127.0.0.53"), Search: []string{"x.example"}}},
		{"stub, systemd file without servers", "nameserver 127.0.0.53\nsearch x.example\n", "search y.example\n",
			File{Nameservers: addrs("127.0.0.53"), Search: []string{"x.example"}}},
		{"no nameserver at all", "search x.example\n", systemd, File{Search: []string{"x.example"}}},
		{"no host file", "", systemd, File{}},
	} {
		dir := t.TempDir()
		hostPath, sdPath := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "systemd.conf")
		if tc.host != "" {
			write(t, hostPath, tc.host)
		}
		if tc.systemd != "-" {
			write(t, sdPath, tc.systemd)
		}
		if got := Host(hostPath, sdPath); !equal(got, tc.want) {
			t.Errorf("%s: Host = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestReachable(t *testing.T) {
	f := File{Nameservers: addrs("127.0.0.53", "192.0.2.1", "::1", "2001:db8::1", "127.0.0.1", "192.0.2.2")}
	if got, want := f.Reachable(), addrs("192.0.2.1", "2001:db8::1", "192.0.2.2"); !slices.Equal(got, want) {
		t.Errorf("Reachable = %v, want %v", got, want)
	}
	if got := (File{}).Reachable(); got != nil {
		t.Errorf("Reachable of no servers = %v", got)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
