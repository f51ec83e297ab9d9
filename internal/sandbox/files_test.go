package sandbox

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/resolvconf"
)

func TestResolvConf(t *testing.T) {
	host := resolvconf.File{Nameservers: []netip.Addr{netip.MustParseAddr("127.0.0.53"), netip.MustParseAddr("192.0.2.53")},
		Search: []string{"lan"}, Options: []string{"edns0"}}
	for _, tc := range []struct {
		name     string
		embedded bool
		cfg      DNSConfig
		want     []string
		not      []string
	}{
		{"embedded: 127.0.0.11, the host's search", true, DNSConfig{}, []string{"nameserver 127.0.0.11", "search lan"}, []string{"192.0.2.53"}},
		{"embedded: configured search wins", true, DNSConfig{Search: []string{"corp"}}, []string{"search corp"}, []string{"search lan"}},
		{"default bridge: the host's reachable servers", false, DNSConfig{}, []string{"nameserver 192.0.2.53", "search lan", "options edns0"}, []string{"127.0.0.53"}},
		{"default bridge: dns configured", false, DNSConfig{Servers: []netip.Addr{netip.MustParseAddr("198.51.100.1")}}, []string{"nameserver 198.51.100.1"}, []string{"192.0.2.53"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(ResolvConf(tc.embedded, tc.cfg, host))
			for _, w := range tc.want {
				if !strings.Contains(got, w+"\n") {
					t.Errorf("missing %q in:\n%s", w, got)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(got, n) {
					t.Errorf("unexpected %q in:\n%s", n, got)
				}
			}
		})
	}
	if got := string(ResolvConf(false, DNSConfig{}, resolvconf.File{Nameservers: []netip.Addr{netip.MustParseAddr("127.0.0.53")}})); !strings.Contains(got, "No usable nameserver") {
		t.Errorf("loopback-only host: %s", got)
	}
}

func TestFilesWriteInPlace(t *testing.T) {
	f := Files{Dir: t.TempDir()}
	if err := f.Write("sb1", Content{Hosts: Hosts("h", "web", []netip.Addr{netip.MustParseAddr("10.0.0.2")}), ResolvConf: []byte("x\n"), Hostname: "h"}); err != nil {
		t.Fatal(err)
	}
	p := f.Paths("sb1")["/etc/hosts"]
	before, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Write("sb1", Content{Hosts: []byte("new\n"), Hostname: "h2"}); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Fatal("hosts replaced, not rewritten in place (a bind mount would keep the old file)")
	}
	if b, _ := os.ReadFile(f.Paths("sb1")["/etc/hostname"]); string(b) != "h2\n" {
		t.Fatalf("hostname %q", b)
	}
	if b, _ := os.ReadFile(p); !strings.Contains(string(Hosts("h", "web", []netip.Addr{netip.MustParseAddr("10.0.0.2")})), "10.0.0.2\th web\n") || string(b) != "new\n" {
		t.Fatalf("hosts %q", b)
	}
	if err := f.Remove("sb1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("after Remove: %v", err)
	}
}
