package portmap

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	any4 := netip.MustParseAddr("0.0.0.0")
	none := netip.Addr{}
	tests := []struct {
		in   string
		want []Spec
	}{
		{"80", []Spec{{none, 0, 80, "tcp"}}},
		{"80/udp", []Spec{{none, 0, 80, "udp"}}},
		{"80/TCP", []Spec{{none, 0, 80, "tcp"}}},
		{"8080:80", []Spec{{none, 8080, 80, "tcp"}}},
		{"127.0.0.1:8080:80/udp", []Spec{{lo, 8080, 80, "udp"}}},
		{"0.0.0.0:8080:80", []Spec{{any4, 8080, 80, "tcp"}}},
		{"127.0.0.1::80", []Spec{{lo, 0, 80, "tcp"}}},
		{"65535:65535", []Spec{{none, 65535, 65535, "tcp"}}},
		{"8000-8002:80-82", []Spec{{none, 8000, 80, "tcp"}, {none, 8001, 81, "tcp"}, {none, 8002, 82, "tcp"}}},
		{"127.0.0.1::80-81/udp", []Spec{{lo, 0, 80, "udp"}, {lo, 0, 81, "udp"}}},
		{"80-81", []Spec{{none, 0, 80, "tcp"}, {none, 0, 81, "tcp"}}},
		{"9000-9000:90", []Spec{{none, 9000, 90, "tcp"}}},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ in, msg string }{
		{"99999:80", `invalid host port "99999" in "99999:80"`},
		{"0:80", `invalid host port "0"`},
		{"8080:0", `invalid container port "0"`},
		{"8080:70000", `invalid container port "70000"`},
		{"8080:http", `invalid container port "http"`},
		{"1.2.3:8080:80", `invalid host IP "1.2.3"`},
		{"localhost:8080:80", `invalid host IP "localhost"`},
		{"8000-8005:80-84", `differ in length`},
		{"8000-8005:80", `differ in length`},
		{"8005-8000:80-85", `invalid host port range "8005-8000"`},
		{"80-", `invalid container port range "80-"`},
		{"80/sctp", `unknown protocol "sctp"`},
		{"80/", `empty protocol`},
		{"", `empty container port`},
		{"8080:", `empty container port`},
		{":80", `empty host port`},
		{":8080:80", `empty host IP`},
		{"[::1]:8080:80", `IPv6`},
		{"::1:8080:80", `IPv6`},
		{"::ffff:1.2.3.4:8080:80", `IPv6`},
		{"1.2.3.4:8080:80:90", `too many parts`},
		{"-1:80", `invalid host port`},
		{"+80", `invalid container port`},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err == nil {
			t.Errorf("Parse(%q) = %+v, want error containing %q", tt.in, got, tt.msg)
			continue
		}
		if !strings.Contains(err.Error(), tt.msg) || !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) error %q: want it to contain %q and wrap ErrInvalid", tt.in, err, tt.msg)
		}
	}
}

func TestStringRoundTrip(t *testing.T) {
	for _, in := range []string{"80/tcp", "8080:80/tcp", "127.0.0.1:8080:80/udp", "127.0.0.1::80/tcp", "0.0.0.0:1:65535/udp"} {
		specs, err := Parse(in)
		if err != nil || len(specs) != 1 {
			t.Fatalf("Parse(%q) = %v, %v", in, specs, err)
		}
		if got := String(specs[0]); got != in {
			t.Errorf("String(Parse(%q)) = %q", in, got)
		}
	}
}

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
