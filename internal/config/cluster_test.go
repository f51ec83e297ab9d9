package config

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseAdvertise(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Advertise
		err  string // "" = accepted
	}{
		{"eth0:2376", Advertise{Interface: "eth0", Port: 2376}, ""},
		{"198.18.0.10:2376", Advertise{Addr: netip.MustParseAddr("198.18.0.10"), Port: 2376}, ""},
		{"[2001:db8::10]:2376", Advertise{Addr: netip.MustParseAddr("2001:db8::10"), Port: 2376}, ""},
		{"[fd00:18::1]:1", Advertise{Addr: netip.MustParseAddr("fd00:18::1"), Port: 1}, ""}, // ULA: global scope
		{"[2001:DB8::10]:65535", Advertise{Addr: netip.MustParseAddr("2001:db8::10"), Port: 65535}, ""},
		{"2001:db8::10:2376", Advertise{}, "want IFACE:PORT, IP:PORT or [IPv6]:PORT"},
		{"[2001:db8::10]", Advertise{}, "want IFACE:PORT"},
		{"[2001:db8::10]:0", Advertise{}, `bad port "0"`},
		{"[2001:db8::10]:x", Advertise{}, `bad port "x"`},
		{"[::1]:2376", Advertise{}, "global IPv6 address"},
		{"[::]:2376", Advertise{}, "global IPv6 address"},
		{"[ff02::1]:2376", Advertise{}, "global IPv6 address"},
		{"[fe80::1]:2376", Advertise{}, "global IPv6 address"},
		{"[fe80::1%eth0]:2376", Advertise{}, "must not have a zone"},
		{"[::ffff:198.18.0.10]:2376", Advertise{}, "IPv4-mapped"},
		{"[198.18.0.10]:2376", Advertise{}, "IPv4 address is written without brackets"},
		{"[eth0]:2376", Advertise{}, "in brackets is not an IPv6 address"},
		{"127.0.0.1:2376", Advertise{}, "the address must be an IPv4 address other hosts can reach"},
		{"0.0.0.0:2376", Advertise{}, "the address must be an IPv4 address other hosts can reach"},
	} {
		got, err := ParseAdvertise(tc.in)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("ParseAdvertise(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), tc.in) {
			t.Errorf("ParseAdvertise(%q) = %+v, %v; want an error naming the value and containing %q", tc.in, got, err, tc.err)
		}
	}
}
