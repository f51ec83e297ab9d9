package portspec

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary -p values (the CLI's run, sandbox create and
// network connect -p) to Parse. Whatever the input: no panic; an error wraps
// ErrInvalid and quotes the whole value; a success gives at most 65535
// specs, every port in 1-65535, tcp or udp, a host address that is IPv4,
// IPv6 (neither IPv4-mapped nor zoned) or none, consecutive ports for a
// range, and String of each spec parses back to exactly that spec.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"80", "80/udp", "80/TCP", "8080:80", "127.0.0.1:8080:80/udp", "0.0.0.0:8080:80", "127.0.0.1::80",
		"65535:65535", "8000-8002:80-82", "127.0.0.1::80-81/udp", "80-81", "9000-9000:90", "1-65535",
		"", ":", "::", ":::", "/", "80/", "80/sctp", "0", "65536", "-1", "80-", "-80", "82-80", "1:2:3:4",
		"[::1]:80:80", "::1:80:80", "localhost:80:80", "1.2.3.4:", "1.2.3.4::", "+80", "0x50", "080", " 80",
		"8000-8001:80", "80:8000-8001", "1.2.3.4:80-90:80-90/udp",
		"[::]:8080:80", "[2001:db8::1]:80:80/udp", "[::1]::80", "[::1]:8000-8001:80-81/udp", "[::ffff:1.2.3.4]:1:1",
		"[fe80::1%eth0]:1:1", "[]:1:1", "[::1:1:1", "[::1]1:1", "[[::1]]:1:1", "[1.2.3.4]:1:1", ":::80:80",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		specs, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q): error %v does not wrap ErrInvalid", s, err)
			}
			if specs != nil {
				t.Fatalf("Parse(%q): specs %v with error %v", s, specs, err)
			}
			return
		}
		if len(specs) == 0 || len(specs) > 65535 {
			t.Fatalf("Parse(%q) = %d specs", s, len(specs))
		}
		for i, sp := range specs {
			switch {
			case sp.ContainerPort == 0:
				t.Fatalf("Parse(%q)[%d]: container port 0", s, i)
			case sp.Proto != "tcp" && sp.Proto != "udp":
				t.Fatalf("Parse(%q)[%d]: protocol %q", s, i, sp.Proto)
			case sp.HostIP.Is4In6() || sp.HostIP.Zone() != "":
				t.Fatalf("Parse(%q)[%d]: host address %v is IPv4-mapped or zoned", s, i, sp.HostIP)
			case sp.Validate() != nil:
				t.Fatalf("Parse(%q)[%d]: %+v: %v", s, i, sp, sp.Validate())
			case i > 0 && sp.ContainerPort != specs[i-1].ContainerPort+1:
				t.Fatalf("Parse(%q): container ports not consecutive at %d", s, i)
			case i > 0 && sp.HostPort != 0 && sp.HostPort != specs[i-1].HostPort+1:
				t.Fatalf("Parse(%q): host ports not consecutive at %d", s, i)
			case i > 0 && (sp.HostPort == 0) != (specs[0].HostPort == 0):
				t.Fatalf("Parse(%q): some host ports ephemeral, some not", s)
			}
			back, err := Parse(String(sp))
			if err != nil || len(back) != 1 || back[0] != sp {
				t.Fatalf("Parse(String(%+v)) = %+v, %v (from %q)", sp, back, err, s)
			}
		}
		if strings.Count(s, "/") > 1 {
			t.Fatalf("Parse(%q) accepted more than one '/'", s)
		}
	})
}

// TestParseBracketWithoutPorts: "[" (found by FuzzParse) panicked with a
// slice out of range; a bracketed host IP needs host and container ports.
func TestParseBracketWithoutPorts(t *testing.T) {
	for _, s := range []string{"[", "[80", "[::1]:80", "[/udp", "[:"} {
		if _, err := Parse(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

// FuzzFromBinding feeds arbitrary PortBindings entries (key, HostIp,
// HostPort) to FromBinding. Whatever the input: no panic; an error wraps
// ErrInvalid and comes with no specs; a success gives specs that pass
// Validate and that Binding formats back into entries FromBinding reads as
// the same spec. Where the parts hold no ':' of their own (nor a '/' or
// '[' outside the key; a hostIP with ':' is bracketed, as an IPv6 address
// is in -p), the entry means the -p value "hostIP:hostPort:port" and
// FromBinding must agree with Parse on it: both refuse, or both give the
// same specs (one grammar).
func FuzzFromBinding(f *testing.F) {
	for _, s := range [][3]string{
		{"80/tcp", "", ""}, {"80", "", "8080"}, {"8000-8001/udp", "", "9000-9001"}, {"80/tcp", "127.0.0.1", ""},
		{"80/tcp", "0.0.0.0", "8080"}, {"80/tcp", "::", "8080"}, {"80/tcp", "", "8080-8081"}, {"80-81", "", "8080"},
		{"", "", ""}, {"80/", "", ""}, {"80/sctp", "", ""}, {"0", "", ""}, {"80", "", "0"}, {"80", "", "65536"},
		{"8080:80", "", ""}, {"80", "[::1]", "1"}, {"80/udp", "2001:db8::1", "1"}, {"80", "::ffff:1.2.3.4", ""}, {"80", "fe80::1%lo", "1"}, {"80", "localhost", "1"}, {"1-65535", "", ""}, {"80", "", "-1"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, port, hostIP, hostPort string) {
		specs, err := FromBinding(port, hostIP, hostPort)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || specs != nil {
				t.Fatalf("FromBinding(%q, %q, %q) = %v, %v: want no specs and an error wrapping ErrInvalid", port, hostIP, hostPort, specs, err)
			}
		}
		for _, sp := range specs {
			if err := sp.Validate(); err != nil {
				t.Fatalf("FromBinding(%q, %q, %q) gave %+v: %v", port, hostIP, hostPort, sp, err)
			}
			back, err := FromBinding(Binding(sp))
			if err != nil || len(back) != 1 || back[0] != sp {
				t.Fatalf("FromBinding(Binding(%+v)) = %+v, %v", sp, back, err)
			}
		}
		if strings.Contains(port, ":") || strings.ContainsAny(hostIP, "/[]") || strings.ContainsAny(hostPort, ":/") {
			return
		}
		p := port
		switch {
		case strings.Contains(hostIP, ":"):
			p = "[" + hostIP + "]:" + hostPort + ":" + port
		case hostIP != "":
			p = hostIP + ":" + hostPort + ":" + port
		case hostPort != "":
			p = hostPort + ":" + port
		}
		parsed, perr := Parse(p)
		if (err == nil) != (perr == nil) || !reflect.DeepEqual(specs, parsed) {
			t.Fatalf("FromBinding(%q, %q, %q) = %v, %v but Parse(%q) = %v, %v", port, hostIP, hostPort, specs, err, p, parsed, perr)
		}
	})
}
