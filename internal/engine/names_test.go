package engine

import (
	"net/netip"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"app", true},
		{"app_default", true},
		{"a", true},
		{"web-1", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{strings.Repeat("a", 70), false},
		{"", false},
		{"-x", false},
		{"x-", false},
		{"my/net", false},
		{"a b", false},
		{"a.b", false},
		{"ünï", false},
	}
	for _, tt := range tests {
		err := validName("network name", tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("validName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && (KindOf(err) != KindInvalid || !strings.Contains(err.Error(), "network name")) {
			t.Errorf("validName(%q) error %q: want an invalid-kind error naming the field", tt.name, err)
		}
	}
}

func TestResolve(t *testing.T) {
	all := map[string]string{"abc123": "web", "abd456": "db", "ffff00": "abc123x"}
	id := func(s string) string {
		for k, v := range all {
			if v == s {
				return k
			}
		}
		return ""
	}
	name := func(s string) string { return s }
	tests := []struct {
		ref, want string
		kind      Kind
	}{
		{"abc123", "web", 0},    // exact ID
		{"db", "db", 0},         // exact name
		{"abd", "db", 0},        // unique prefix
		{"ab", "", KindInvalid}, // ambiguous prefix
		{"zz", "", KindNotFound},
		{"", "", KindInvalid},
	}
	for _, tt := range tests {
		got, err := resolve("sandbox", tt.ref, all, id, name)
		if tt.kind != 0 {
			if KindOf(err) != tt.kind {
				t.Errorf("resolve(%q) = %q, %v; want kind %v", tt.ref, got, err, tt.kind)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("resolve(%q) = %q, %v; want %q", tt.ref, got, err, tt.want)
		}
	}
}

func TestHostsFile(t *testing.T) {
	sb := &Sandbox{Name: "web", Hostname: "abc", Endpoints: []*Endpoint{
		{Address: netip.MustParsePrefix("10.0.0.2/24")}, {}, {Address: netip.MustParsePrefix("10.1.0.3/16")},
	}}
	got := string(hostsFile(sb))
	for _, want := range []string{"127.0.0.1\tlocalhost\n", "::1\tlocalhost ip6-localhost ip6-loopback\n", "10.0.0.2\tabc web\n", "10.1.0.3\tabc web\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("hosts lacks %q:\n%s", want, got)
		}
	}
	sb.Hostname = "web"
	if got := string(hostsFile(sb)); !strings.Contains(got, "10.0.0.2\tweb\n") {
		t.Errorf("name equal to hostname is written once:\n%s", got)
	}
}
