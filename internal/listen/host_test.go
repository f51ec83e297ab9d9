package listen

import (
	"strings"
	"testing"
)

func TestParseHost(t *testing.T) {
	tests := []struct {
		in   string
		port int
		want Host
	}{
		{"unix:///run/tether.sock", PortTLS, Host{"unix", "/run/tether.sock"}},
		{"unix:///run//x/../t.sock", PortTLS, Host{"unix", "/run/t.sock"}},
		{"tcp://0.0.0.0:2376", PortPlain, Host{"tcp", "0.0.0.0:2376"}},
		{"tcp://10.1.2.3", PortTLS, Host{"tcp", "10.1.2.3:2376"}},
		{"tcp://10.1.2.3", PortPlain, Host{"tcp", "10.1.2.3:2375"}},
		{"tcp://:4000", PortTLS, Host{"tcp", "127.0.0.1:4000"}},
		{"tcp://", PortTLS, Host{"tcp", "127.0.0.1:2376"}},
		{"tcp://:", PortPlain, Host{"tcp", "127.0.0.1:2375"}},
		{"tcp://[::1]", PortTLS, Host{"tcp", "[::1]:2376"}},
		{"tcp://[fd00::1]:9", PortTLS, Host{"tcp", "[fd00::1]:9"}},
		{"tcp://localhost:65535", PortTLS, Host{"tcp", "localhost:65535"}},
		{"0.0.0.0:2376", PortPlain, Host{"tcp", "0.0.0.0:2376"}},
		{"fd://", PortTLS, Host{"fd", ""}},
		{"fd://3", PortTLS, Host{"fd", "3"}},
		{"fd://017", PortTLS, Host{"fd", "17"}},
	}
	for _, tt := range tests {
		got, err := ParseHost(tt.in, tt.port)
		if err != nil || got != tt.want {
			t.Errorf("ParseHost(%q, %d) = %+v, %v; want %+v", tt.in, tt.port, got, err, tt.want)
		}
		if again, err := ParseHost(got.String(), tt.port); err != nil || again != got {
			t.Errorf("%q: canonical form %q does not parse back: %+v, %v", tt.in, got, again, err)
		}
	}
}

func TestParseHostErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"http://x", `unknown scheme "http"`},
		{"ssh://user@host", `unknown scheme "ssh"`},
		{"unix://", "the socket path must be absolute"},
		{"unix://rel/t.sock", `"unix://rel/t.sock": the socket path must be absolute`},
		{"tcp://h:port", `port "port" is not a number 1..65535`},
		{"tcp://h:0", `port "0"`},
		{"tcp://h:70000", `port "70000"`},
		{"tcp://h:2376/v1.40", "want tcp://host:port"},
		{"tcp://h:1?x=1", "want tcp://host:port"},
		{"tcp://::1", "too many colons"},
		{"/run/t.sock", "a socket path is written unix:///path"},
		{"fd://x", "want fd:// or fd://N"},
		{"fd://0", "3 or more"},
		{"fd://-3", "3 or more"},
	}
	for _, tt := range tests {
		_, err := ParseHost(tt.in, PortTLS)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseHost(%q) error %v, want one containing %q", tt.in, err, tt.want)
		}
	}
}
