package portmap

import "testing"

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
