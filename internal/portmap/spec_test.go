package portmap

import (
	"net/netip"
	"testing"
)

func TestParseHexAddrPort(t *testing.T) {
	tests := []struct{ in, want string }{
		{"0100007F:1F90", "127.0.0.1:8080"},
		{"00000000:0035", "0.0.0.0:53"},
		{"00000000000000000000000000000000:0050", "[::]:80"},
		{"0000000000000000FFFF00000100007F:0050", "[::ffff:127.0.0.1]:80"},
	}
	for _, tt := range tests {
		got, ok := parseHexAddrPort(tt.in)
		if !ok || got.String() != tt.want {
			t.Errorf("parseHexAddrPort(%q) = %v, %v; want %s", tt.in, got, ok, tt.want)
		}
	}
}

func TestOverlaps(t *testing.T) {
	tests := []struct {
		sock, want string
		ok         bool
	}{
		{"127.0.0.1", "127.0.0.1", true},
		{"0.0.0.0", "127.0.0.1", true},
		{"127.0.0.1", "0.0.0.0", true},
		{"127.0.0.1", "127.0.0.2", false},
		{"::ffff:127.0.0.1", "127.0.0.1", true}, // a mapped entry is IPv4
		{"::", "127.0.0.1", true},               // possibly dual-stack
		{"::", "0.0.0.0", true},
		{"::1", "127.0.0.1", false},
		{"::1", "::1", true},
		{"::", "::1", true},
		{"::1", "::", true},
		{"::1", "2001:db8::1", false},
		{"0.0.0.0", "::", false}, // IPv4 sockets never block a V6ONLY bind
		{"127.0.0.1", "::1", false},
	}
	for _, tt := range tests {
		if got := overlaps(netip.MustParseAddr(tt.sock), netip.MustParseAddr(tt.want)); got != tt.ok {
			t.Errorf("overlaps(%s, %s) = %v, want %v", tt.sock, tt.want, got, tt.ok)
		}
	}
}
