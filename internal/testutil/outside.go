package testutil

import "testing"

// The "outside" of a test host: a namespace linked to the host namespace by
// a veth pair (host uplink up0 UplinkAddr/24, outside wan0 OutsideAddr/24)
// that carries the host's default route. Addresses are from TEST-NET-2, so
// nothing real is ever addressed.
const (
	UplinkAddr  = "198.51.100.1"
	OutsideAddr = "198.51.100.2"
)

// Outside builds the outside namespace of host namespace hostNS and returns
// its name; the test's cleanup deletes it.
func Outside(tb testing.TB, hostNS string) string {
	tb.Helper()
	out := NetNS(tb, "tth-out")
	Must(tb, "ip", "-n", hostNS, "link", "add", "up0", "type", "veth", "peer", "name", "wan0", "netns", out)
	for _, c := range [][]string{
		{"-n", hostNS, "addr", "add", UplinkAddr + "/24", "dev", "up0"},
		{"-n", hostNS, "link", "set", "up0", "up"},
		{"-n", hostNS, "route", "add", "default", "via", OutsideAddr},
		{"-n", out, "addr", "add", OutsideAddr + "/24", "dev", "wan0"},
		{"-n", out, "link", "set", "wan0", "up"},
	} {
		Must(tb, "ip", c...)
	}
	return out
}
