package overlay

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/testutil"
)

// Announcements share one packet socket: a socket per announcement put an
// RCU grace period (its close) on the watcher's path of every peer.
func TestGARPSocketKept(t *testing.T) {
	testutil.RequireRoot(t)
	var g garpSocket
	first, err := g.get("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(first) })
	for range 3 {
		fd, err := g.get("")
		if err != nil {
			t.Fatal(err)
		}
		if fd != first {
			t.Fatalf("announcement socket %d, then %d: want the same one kept", first, fd)
		}
	}
	if _, err := unix.FcntlInt(uintptr(first), unix.F_GETFD, 0); err != nil {
		t.Fatalf("the kept socket is closed: %v", err)
	}
}
