package portmap

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// testNS creates a network namespace with loopback up (deleted when the
// test ends) and returns its path. Sockets made inside in() belong to it.
func testNS(t testing.TB) string {
	t.Helper()
	testutil.RequireRoot(t)
	return "/run/netns/" + testutil.NetNS(t, "tpm")
}

// in runs fn on a thread inside the namespace; fn must not call t.Fatal.
func in(t testing.TB, ns string, fn func() error) {
	t.Helper()
	if err := netns.Do(ns, fn); err != nil {
		t.Fatal(err)
	}
}

// holdIn holds a port inside ns and closes it when the test ends.
func holdIn(t testing.TB, ns, proto, ip string, port uint16) *Held {
	t.Helper()
	var h *Held
	in(t, ns, func() (err error) {
		h, err = Hold(proto, netip.MustParseAddr(ip), port)
		return err
	})
	t.Cleanup(func() { h.Close() })
	return h
}

func selfComm(t testing.TB) string {
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
