package portspec

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
	lo6, any6, doc6 := netip.IPv6Loopback(), netip.IPv6Unspecified(), netip.MustParseAddr("2001:db8::1")
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
		{"[::1]:8080:80", []Spec{{lo6, 8080, 80, "tcp"}}},
		{"[2001:db8::1]:80:80/udp", []Spec{{doc6, 80, 80, "udp"}}},
		{"[::]:8080:80", []Spec{{any6, 8080, 80, "tcp"}}},
		{"[::]::80/udp", []Spec{{any6, 0, 80, "udp"}}},
		{"[::1]:8000-8001:80-81/udp", []Spec{{lo6, 8000, 80, "udp"}, {lo6, 8001, 81, "udp"}}},
		{"[::1]::80-81", []Spec{{lo6, 0, 80, "tcp"}, {lo6, 0, 81, "tcp"}}},
		{"[2001:DB8:0:0::1]:80:80", []Spec{{doc6, 80, 80, "tcp"}}},
		{"[::ffff:127.0.0.1]:8080:80", []Spec{{lo, 8080, 80, "tcp"}}}, // IPv4-mapped: its IPv4 address
		{"[127.0.0.1]:8080:80", []Spec{{lo, 8080, 80, "tcp"}}},        // Docker strips brackets from any address
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
		{"::1:8080:80", `IPv6 host address "::1" in "::1:8080:80" must be in brackets: "[::1]:8080:80"`},
		{":::8080:80", `IPv6 host address "::" in ":::8080:80" must be in brackets`},
		{"2001:db8::1::80/udp", `IPv6 host address "2001:db8::1" in "2001:db8::1::80/udp" must be in brackets: "[2001:db8::1]::80"`},
		{"::ffff:1.2.3.4:8080:80", `must be in brackets`},
		{"[::1]:80", `bracketed host IP without host and container ports`},
		{"[::1]8080:80", `unexpected "8080:80" after bracketed host IP in "[::1]8080:80"`},
		{"[::1:8080:80", `missing ']'`},
		{"[]:8080:80", `empty host IP`},
		{"[::1]:8080:80:90", `too many parts`},
		{"[::1]:70000:80", `invalid host port "70000"`},
		{"[::1]:8080:0", `invalid container port "0"`},
		{"[::1]:8000-8001:80", `differ in length`},
		{"[::g]:8080:80", `invalid host IP "::g"`},
		{"[[::1]]:8080:80", `unexpected "]:8080:80" after bracketed host IP`},
		{"[fe80::1%eth0]:8080:80", `host IP "fe80::1%eth0" in "[fe80::1%eth0]:8080:80": an IPv6 zone is not allowed`},
		{"[::1]:8080:80/sctp", `unknown protocol "sctp"`},
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
	for _, in := range []string{"80/tcp", "8080:80/tcp", "127.0.0.1:8080:80/udp", "127.0.0.1::80/tcp", "0.0.0.0:1:65535/udp",
		"[::1]:8080:80/tcp", "[::]::80/udp", "[2001:db8::1]:80:80/udp"} {
		specs, err := Parse(in)
		if err != nil || len(specs) != 1 {
			t.Fatalf("Parse(%q) = %v, %v", in, specs, err)
		}
		if got := String(specs[0]); got != in {
			t.Errorf("String(Parse(%q)) = %q", in, got)
		}
	}
}

func TestFromBinding(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	any4 := netip.MustParseAddr("0.0.0.0")
	doc6 := netip.MustParseAddr("2001:db8::1")
	none := netip.Addr{}
	tests := []struct {
		port, hostIP, hostPort string
		want                   []Spec
	}{
		{"80/tcp", "", "", []Spec{{none, 0, 80, "tcp"}}},
		{"80", "", "", []Spec{{none, 0, 80, "tcp"}}},
		{"80/udp", "", "8080", []Spec{{none, 8080, 80, "udp"}}},
		{"80/UDP", "", "8080", []Spec{{none, 8080, 80, "udp"}}},
		{"80/tcp", "127.0.0.1", "8080", []Spec{{lo, 8080, 80, "tcp"}}},
		{"80/tcp", "0.0.0.0", "8080", []Spec{{any4, 8080, 80, "tcp"}}},
		{"80/tcp", "127.0.0.1", "", []Spec{{lo, 0, 80, "tcp"}}},
		{"8000-8001/udp", "", "", []Spec{{none, 0, 8000, "udp"}, {none, 0, 8001, "udp"}}},
		{"8000-8001/udp", "", "9000-9001", []Spec{{none, 9000, 8000, "udp"}, {none, 9001, 8001, "udp"}}},
		{"80-82", "127.0.0.1", "8080-8082", []Spec{{lo, 8080, 80, "tcp"}, {lo, 8081, 81, "tcp"}, {lo, 8082, 82, "tcp"}}},
		{"65535/tcp", "", "65535", []Spec{{none, 65535, 65535, "tcp"}}},
		{"90", "", "9000-9000", []Spec{{none, 9000, 90, "tcp"}}},
		{"80/tcp", "::", "8080", []Spec{{netip.IPv6Unspecified(), 8080, 80, "tcp"}}},
		{"80/udp", "::1", "", []Spec{{netip.IPv6Loopback(), 0, 80, "udp"}}},
		{"80-81", "2001:db8::1", "8080-8081", []Spec{{doc6, 8080, 80, "tcp"}, {doc6, 8081, 81, "tcp"}}},
		{"80/tcp", "::ffff:127.0.0.1", "8080", []Spec{{lo, 8080, 80, "tcp"}}},
	}
	for _, tt := range tests {
		got, err := FromBinding(tt.port, tt.hostIP, tt.hostPort)
		if err != nil {
			t.Errorf("FromBinding(%q, %q, %q): %v", tt.port, tt.hostIP, tt.hostPort, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("FromBinding(%q, %q, %q) = %+v, want %+v", tt.port, tt.hostIP, tt.hostPort, got, tt.want)
		}
	}
}

func TestFromBindingErrors(t *testing.T) {
	tests := []struct{ port, hostIP, hostPort, msg string }{
		{"", "", "", `empty container port in "" (HostIp "", HostPort "")`},
		{"/tcp", "", "", `empty container port`},
		{"80/", "", "", `empty protocol in "80/"`},
		{"80/sctp", "", "", `unknown protocol "sctp"`},
		{"http/tcp", "", "", `invalid container port "http" in "http/tcp"`},
		{"0/tcp", "", "", `invalid container port "0"`},
		{"70000/tcp", "", "", `invalid container port "70000"`},
		{"8080:80/tcp", "", "", `invalid container port "8080:80"`},
		{"82-80/tcp", "", "", `invalid container port range "82-80"`},
		{"80/tcp", "", "99999", `invalid host port "99999" in "80/tcp" (HostIp "", HostPort "99999")`},
		{"80/tcp", "", "0", `invalid host port "0"`},
		{"80/tcp", "", "-1", `invalid host port "-1"`},
		{"80/tcp", "", "+8080", `invalid host port "+8080"`},
		{"80/tcp", "", " 8080", `invalid host port " 8080"`},
		{"80/tcp", "", "8080-", `invalid host port range "8080-"`},
		{"80/tcp", "", "8081-8080", `invalid host port range "8081-8080"`},
		{"80/tcp", "", "8080-8081", `differ in length`},
		{"80-81/tcp", "", "8080", `differ in length`},
		{"80/tcp", "localhost", "8080", `invalid host IP "localhost" in "80/tcp" (HostIp "localhost"`},
		{"80/tcp", "1.2.3", "8080", `invalid host IP "1.2.3"`},
		{"80/tcp", "[::1]", "8080", `invalid host IP "[::1]"`},
		{"80/tcp", "fe80::1%eth0", "8080", `host IP "fe80::1%eth0" in "80/tcp" (HostIp "fe80::1%eth0", HostPort "8080"): an IPv6 zone is not allowed`},
		{"80/tcp", "::1", "8080-8081", `differ in length`},
	}
	for _, tt := range tests {
		got, err := FromBinding(tt.port, tt.hostIP, tt.hostPort)
		if err == nil {
			t.Errorf("FromBinding(%q, %q, %q) = %+v, want error containing %q", tt.port, tt.hostIP, tt.hostPort, got, tt.msg)
			continue
		}
		if !strings.Contains(err.Error(), tt.msg) || !errors.Is(err, ErrInvalid) || got != nil {
			t.Errorf("FromBinding(%q, %q, %q) = %v, %q: want no specs and an error containing %q wrapping ErrInvalid",
				tt.port, tt.hostIP, tt.hostPort, got, err, tt.msg)
		}
	}
}

// Binding gives the PortBindings entry that FromBinding reads back into the
// same Spec, for every form Parse produces.
func TestBindingRoundTrip(t *testing.T) {
	for _, in := range []string{"80", "8080:80/udp", "127.0.0.1:8080:80", "127.0.0.1::80/udp", "0.0.0.0:1:65535",
		"[::1]:8080:80", "[::]::80/udp"} {
		specs, err := Parse(in)
		if err != nil || len(specs) != 1 {
			t.Fatalf("Parse(%q) = %v, %v", in, specs, err)
		}
		port, ip, hp := Binding(specs[0])
		back, err := FromBinding(port, ip, hp)
		if err != nil || len(back) != 1 || back[0] != specs[0] {
			t.Errorf("FromBinding(Binding(Parse(%q))) = FromBinding(%q, %q, %q) = %v, %v", in, port, ip, hp, back, err)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		s   Spec
		msg string // "" = valid
	}{
		{Spec{ContainerPort: 80, Proto: "tcp"}, ""},
		{Spec{HostIP: netip.MustParseAddr("10.0.0.1"), HostPort: 1, ContainerPort: 80, Proto: "udp"}, ""},
		{Spec{ContainerPort: 80, Proto: "sctp"}, `protocol "sctp"`},
		{Spec{ContainerPort: 80}, `protocol ""`},
		{Spec{Proto: "tcp"}, "container port 0"},
		{Spec{HostIP: netip.MustParseAddr("::1"), ContainerPort: 80, Proto: "tcp"}, ""},
		{Spec{HostIP: netip.IPv6Unspecified(), HostPort: 8080, ContainerPort: 80, Proto: "udp"}, ""},
		{Spec{HostIP: netip.MustParseAddr("::ffff:10.0.0.1"), ContainerPort: 80, Proto: "tcp"}, ""},
		{Spec{HostIP: netip.MustParseAddr("fe80::1%eth0"), ContainerPort: 80, Proto: "tcp"}, "IPv6 zone"},
	}
	for _, tt := range tests {
		err := tt.s.Validate()
		if tt.msg == "" {
			if err != nil {
				t.Errorf("Validate(%+v) = %v", tt.s, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.msg) || !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(%+v) = %v, want an error containing %q wrapping ErrInvalid", tt.s, err, tt.msg)
		}
	}
}

// Binding gives the raw address Docker's HostIp holds, never brackets.
func TestBindingIPv6(t *testing.T) {
	specs, err := Parse("[2001:db8::1]:8080:80/udp")
	if err != nil {
		t.Fatal(err)
	}
	port, ip, hp := Binding(specs[0])
	if port != "80/udp" || ip != "2001:db8::1" || hp != "8080" {
		t.Errorf("Binding = %q, %q, %q; want \"80/udp\", \"2001:db8::1\", \"8080\"", port, ip, hp)
	}
}
