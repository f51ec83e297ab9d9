package dns

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestResolvConf(t *testing.T) {
	for _, tc := range []struct {
		search, opts []string
		want         string
	}{
		{nil, nil, "nameserver 127.0.0.11\noptions ndots:0\n"},
		{[]string{"a.example", "b.example"}, []string{"timeout:1", "attempts:2"},
			"nameserver 127.0.0.11\nsearch a.example b.example\noptions ndots:0 timeout:1 attempts:2\n"},
		{nil, []string{"ndots:3"}, "nameserver 127.0.0.11\noptions ndots:3\n"},
	} {
		if got := string(ResolvConf(tc.search, tc.opts)); got != tc.want {
			t.Errorf("ResolvConf(%v, %v) = %q, want %q", tc.search, tc.opts, got, tc.want)
		}
	}
}

func TestHostUpstreams(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	old := systemdResolvConf
	t.Cleanup(func() { systemdResolvConf = old })
	systemdResolvConf = write("systemd", "nameserver 192.0.2.53\nnameserver 2001:db8::53\n")
	for _, tc := range []struct {
		name, content string
		want          []string
	}{
		{"plain", "# comment\nsearch x\nnameserver 192.0.2.1\nnameserver 127.0.0.1\nnameserver ::1\nnameserver 192.0.2.2\nnameserver bogus\nnameserver 192.0.2.3\nnameserver 192.0.2.4\n",
			[]string{"192.0.2.1:53", "192.0.2.2:53", "192.0.2.3:53"}},
		{"stub", "nameserver 127.0.0.53\noptions edns0 trust-ad\n", []string{"192.0.2.53:53", "[2001:db8::53]:53"}},
		// IPv6 nameservers are kept (Docker drops them only on a host without IPv6)
		{"ipv6", "nameserver 2001:db8::53\nnameserver ::1\nnameserver fe80::1%eth0\nnameserver 192.0.2.1\n",
			[]string{"[2001:db8::53]:53", "[fe80::1%eth0]:53", "192.0.2.1:53"}},
		{"loopback only", "nameserver 127.0.0.1\n", nil},
		{"empty", "", nil},
	} {
		got := HostUpstreams(write(tc.name, tc.content))
		var gs []string
		for _, a := range got {
			gs = append(gs, a.String())
		}
		if !slices.Equal(gs, tc.want) {
			t.Errorf("%s: HostUpstreams = %v, want %v", tc.name, gs, tc.want)
		}
	}
	if got := HostUpstreams(filepath.Join(dir, "missing")); got != nil {
		t.Errorf("missing file: %v", got)
	}
}

func TestConfigDefaults(t *testing.T) {
	ups := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:0"), netip.MustParseAddrPort("192.0.2.2:5353"),
		{}, netip.MustParseAddrPort("192.0.2.3:53"), netip.MustParseAddrPort("192.0.2.4:53")}
	c := Config{Upstreams: ups}.withDefaults()
	want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:53"), netip.MustParseAddrPort("192.0.2.2:5353"), netip.MustParseAddrPort("192.0.2.3:53")}
	if !slices.Equal(c.Upstreams, want) || c.Timeout != DefaultTimeout || c.MaxInFlight != DefaultMaxInFlight || c.TTL != DefaultTTL {
		t.Errorf("withDefaults = %+v", c)
	}
}
