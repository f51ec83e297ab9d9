package e2e

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// peerServer is a sandbox process on port 80 that writes, for every
// connection, the address it sees the client at ("host:port\n") and then
// echoes each line back.
const peerServer = `import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(16)
def serve(c, a):
    c.sendall(("%s:%d\n" % a).encode())
    f = c.makefile("rb")
    for line in f:
        c.sendall(line)
    c.close()
while True:
    c, a = s.accept()
    threading.Thread(target=serve, args=(c, a), daemon=True).start()
`

// redirectConn is a client connection from the host namespace to a
// loopback-published port, with what the sandbox said it saw.
type redirectConn struct {
	c    net.Conn
	r    *bufio.Reader
	seen string // the client address as the sandbox saw it
}

func dialPublished(t *testing.T, hostNS, addr string) *redirectConn {
	t.Helper()
	var c net.Conn
	err := netns.Do("/run/netns/"+hostNS, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, 3*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s in %s: %v", addr, hostNS, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	seen, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read the peer line from %s: %v", addr, err)
	}
	return &redirectConn{c: c, r: r, seen: strings.TrimSpace(seen)}
}

func (rc *redirectConn) echo(t *testing.T, msg string) {
	t.Helper()
	_ = rc.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(rc.c, msg); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	got, err := rc.r.ReadString('\n')
	if err != nil || strings.TrimSpace(got) != msg {
		t.Fatalf("echo of %q: got %q, %v", msg, got, err)
	}
}

// TestLoopbackPublishRedirect: a port published on 127.0.0.1 is reached by
// the host's own clients through the daemon's connect redirect (issue 19):
// the sandbox sees the client's own source port, which no proxy could
// forward (a proxy's second connection has a port of its own), while the
// client's getpeername still shows the published 127.0.0.1:P. The
// connection is a plain host-to-sandbox one, so it survives a daemon
// restart, and the restarted daemon redirects new connections again; under
// every start mode.
func TestLoopbackPublishRedirect(t *testing.T) {
	forModes(t, func(t *testing.T, mode testutil.StartMode) {
		hostNS, d := hostMode(t, mode)
		d.MustTether("network", "create", "--subnet", "10.171.0.0/24", "rdnet")
		runDetached(t, d, "peer", "--network", "rdnet", "-p", "127.0.0.1:8171:80", "--", "python3", "-c", peerServer)
		const published = "127.0.0.1:8171"

		var first *redirectConn
		deadline := time.Now().Add(10 * time.Second)
		for {
			var err error
			err = netns.Do("/run/netns/"+hostNS, func() error {
				c, err := net.DialTimeout("tcp4", published, time.Second)
				if err == nil {
					c.Close()
				}
				return err
			})
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond) // the server is starting
		}
		check := func(rc *redirectConn) {
			t.Helper()
			if got := rc.c.RemoteAddr().String(); got != published {
				t.Errorf("getpeername: %s, want the published %s", got, published)
			}
			_, myPort, _ := net.SplitHostPort(rc.c.LocalAddr().String())
			host, port, err := net.SplitHostPort(rc.seen)
			if err != nil {
				t.Fatalf("sandbox's peer line %q: %v", rc.seen, err)
			}
			if port != myPort {
				t.Errorf("the sandbox saw the client at %s, the client is on port %s: the connection was proxied, not redirected", rc.seen, myPort)
			}
			if host != "10.171.0.1" {
				t.Errorf("the sandbox saw the client at %s, want the host's address on the network (10.171.0.1)", rc.seen)
			}
		}
		first = dialPublished(t, hostNS, published)
		check(first)
		first.echo(t, "before restart")

		restart(t, d)
		first.echo(t, "across the restart") // not cut: no proxy in the middle
		second := dialPublished(t, hostNS, published)
		check(second)
		second.echo(t, "after restart")
	})
}
