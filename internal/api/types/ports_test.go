package types

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/portmap/portspec"
)

func sp(ip netip.Addr, host, ctr uint16, proto string) portspec.Spec {
	return portspec.Spec{HostIP: ip, HostPort: host, ContainerPort: ctr, Proto: proto}
}

func TestPortMapToSpecs(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	none := netip.Addr{}
	tests := []struct {
		name string
		m    PortMap
		want []portspec.Spec
	}{
		{"nil", nil, nil},
		{"empty", PortMap{}, nil},
		{"docker run -p 8080:80", PortMap{"80/tcp": {{HostIP: "", HostPort: "8080"}}}, []portspec.Spec{sp(none, 8080, 80, "tcp")}},
		{"no protocol", PortMap{"80": {{HostPort: "8080"}}}, []portspec.Spec{sp(none, 8080, 80, "tcp")}},
		{"no bindings", PortMap{"53/udp": nil}, []portspec.Spec{sp(none, 0, 53, "udp")}},
		{"empty binding", PortMap{"53/udp": {{}}}, []portspec.Spec{sp(none, 0, 53, "udp")}},
		{"two bindings", PortMap{"80/tcp": {{HostIP: "127.0.0.1", HostPort: "8080"}, {HostPort: "9090"}}},
			[]portspec.Spec{sp(lo, 8080, 80, "tcp"), sp(none, 9090, 80, "tcp")}},
		{"range", PortMap{"8000-8001/udp": {{HostPort: "9000-9001"}}}, []portspec.Spec{sp(none, 9000, 8000, "udp"), sp(none, 9001, 8001, "udp")}},
		{"keys sorted", PortMap{"90/tcp": {{}}, "443/tcp": {{}}, "80/udp": {{}}},
			[]portspec.Spec{sp(none, 0, 443, "tcp"), sp(none, 0, 80, "udp"), sp(none, 0, 90, "tcp")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.m.ToSpecs()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ToSpecs = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPortMapToSpecsErrors(t *testing.T) {
	tests := []struct {
		m    PortMap
		want string
	}{
		{PortMap{"80/tcp": {{HostPort: "99999"}}}, `invalid host port "99999" in "80/tcp"`},
		{PortMap{"80/sctp": nil}, `unknown protocol "sctp"`},
		{PortMap{"": {{}}}, `empty container port`},
		{PortMap{"80/tcp": {{HostIP: "fe80::1%eth0", HostPort: "1"}}}, `fe80::1%eth0`},
		{PortMap{"80/tcp": {{HostPort: "1"}, {HostIP: "nope"}}}, `invalid host IP "nope"`},
		{PortMap{"80/tcp": {{HostPort: "1"}}, "x/tcp": {{}}}, `invalid container port "x"`},
	}
	for _, tt := range tests {
		got, err := tt.m.ToSpecs()
		if err == nil || got != nil || !errors.Is(err, portspec.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ToSpecs(%v) = %v, %v; want no specs and an error containing %q wrapping ErrInvalid", tt.m, got, err, tt.want)
		}
	}
}

func TestParsePublish(t *testing.T) {
	tests := []struct {
		in   []string
		want PortMap
	}{
		{nil, nil},
		{[]string{"80"}, PortMap{"80/tcp": {{}}}},
		{[]string{"8080:80"}, PortMap{"80/tcp": {{HostPort: "8080"}}}},
		{[]string{"127.0.0.1:8080:80/udp"}, PortMap{"80/udp": {{HostIP: "127.0.0.1", HostPort: "8080"}}}},
		{[]string{"127.0.0.1::80"}, PortMap{"80/tcp": {{HostIP: "127.0.0.1"}}}},
		{[]string{"8000-8001:80-81"}, PortMap{"80/tcp": {{HostPort: "8000"}}, "81/tcp": {{HostPort: "8001"}}}},
		{[]string{"8080:80", "9090:80", "53/udp"}, PortMap{"80/tcp": {{HostPort: "8080"}, {HostPort: "9090"}}, "53/udp": {{}}}},
		{[]string{"[::1]:8080:80", "[2001:db8::1]::53/udp"}, PortMap{"80/tcp": {{HostIP: "::1", HostPort: "8080"}}, "53/udp": {{HostIP: "2001:db8::1"}}}},
	}
	for _, tt := range tests {
		got, err := ParsePublish(tt.in)
		if err != nil {
			t.Errorf("ParsePublish(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParsePublish(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	for _, bad := range [][]string{{"99999:80"}, {"80", "80/sctp"}, {""}, {"::1:80:80"}} {
		if got, err := ParsePublish(bad); err == nil || got != nil || !errors.Is(err, portspec.ErrInvalid) {
			t.Errorf("ParsePublish(%q) = %v, %v; want an ErrInvalid error", bad, got, err)
		}
	}
}

// What the CLI sends for -p values, the daemon reads back as exactly what
// Parse makes of them: the wire adds no grammar of its own.
func TestPublishWireRoundTrip(t *testing.T) {
	for _, p := range []string{"80", "8080:80/udp", "127.0.0.1:8080:80", "127.0.0.1::80-82/udp", "9000-9002:90-92", "1.2.3.4:1:65535"} {
		want, err := portspec.Parse(p)
		if err != nil {
			t.Fatal(err)
		}
		m, err := ParsePublish([]string{p})
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.ToSpecs()
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: ParsePublish then ToSpecs = %+v, %v; want %+v", p, got, err, want)
		}
	}
}
