package overlay_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	ot "github.com/tether-net/tether/internal/driver/overlay/overlaytest"
	"github.com/tether-net/tether/internal/testutil"
)

// A local sandbox that asked for a remote address before that peer was
// programmed (its ARP went unanswered: an INCOMPLETE neighbour entry) gets
// it resolved by AddPeer's gratuitous ARP, without a retry of its own: the
// test sets the sandbox's ARP retry to 60 s, so only the announcement can
// resolve the entry while the test waits; the waiting ping is then
// answered.
func TestAddPeerAnnounces(t *testing.T) {
	_, h1, h2 := setup(t, 1500)
	id := ot.NewID()
	n1, n2 := h1.Network(id, 4101, "10.78.0.0/24"), h2.Network(id, 4101, "10.78.0.0/24")
	h1.CreateNetwork(t, n1)
	h2.CreateNetwork(t, n2)
	a, b := h1.Join(t, n1, "10.78.0.2/24"), h2.Join(t, n2, "10.78.0.3/24")
	// b knows a (so it can answer); a's host does not know b yet
	if err := h2.Driver.AddPeer(context.Background(), n2, a.Peer()); err != nil {
		t.Fatal(err)
	}
	testutil.Must(t, "ip", "netns", "exec", a.NS, "sysctl", "-q", "-w",
		"net.ipv4.neigh.eth0.retrans_time_ms=60000", "net.ipv4.neigh.eth0.mcast_solicit=1", "net.ipv4.neigh.eth0.ucast_solicit=1")

	ping := exec.Command("ip", "netns", "exec", a.NS, "ping", "-c", "1", "-W", "30", b.Addr())
	out := &strings.Builder{}
	ping.Stdout, ping.Stderr = out, out
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ping.Process.Kill(); _ = ping.Wait() })
	neigh := func() string {
		s, _ := testutil.InNS(a.NS, "ip", "neigh", "show", b.Addr(), "dev", "eth0")
		return strings.TrimSpace(s)
	}
	waitFor(t, "a's ARP for b unanswered (INCOMPLETE)", 10*time.Second, func() bool { return strings.Contains(neigh(), "INCOMPLETE") })

	if err := h1.Driver.AddPeer(context.Background(), n1, b.Peer()); err != nil {
		t.Fatal(err)
	}
	want := b.EP.MAC.String()
	waitFor(t, "a's entry for b resolved to "+want, 20*time.Second, func() bool { return strings.Contains(neigh(), want) })
	if err := ping.Wait(); err != nil {
		t.Fatalf("the waiting ping: %v\n%s", err, out)
	}
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal(fmt.Sprintf("timed out waiting: %s", what))
		}
	}
}
