package portmap

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary -p values (docker run -p, the API's
// PortBindings after PortMap.Specs) to Parse. Whatever the input: no panic;
// an error wraps ErrInvalid and quotes the whole value; a success gives at
// most 65535 specs, every port in 1-65535, tcp or udp, an IPv4 host address
// or none, consecutive ports for a range, and String of each spec parses
// back to exactly that spec.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"80", "80/udp", "80/TCP", "8080:80", "127.0.0.1:8080:80/udp", "0.0.0.0:8080:80", "127.0.0.1::80",
		"65535:65535", "8000-8002:80-82", "127.0.0.1::80-81/udp", "80-81", "9000-9000:90", "1-65535",
		"", ":", "::", ":::", "/", "80/", "80/sctp", "0", "65536", "-1", "80-", "-80", "82-80", "1:2:3:4",
		"[::1]:80:80", "::1:80:80", "localhost:80:80", "1.2.3.4:", "1.2.3.4::", "+80", "0x50", "080", " 80",
		"8000-8001:80", "80:8000-8001", "1.2.3.4:80-90:80-90/udp",
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
			case sp.HostIP.IsValid() && !sp.HostIP.Is4():
				t.Fatalf("Parse(%q)[%d]: host address %v is not IPv4", s, i, sp.HostIP)
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
