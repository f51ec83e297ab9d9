package portmap

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/testutil"
)

// The package's other tests exercise the userland proxy itself, so the
// redirect is off in this test binary unless a test turns it on
// (withRedirect).
func init() { redirectOn = false }

func withRedirect(t testing.TB) {
	t.Helper()
	old := redirectOn
	redirectOn = true
	t.Cleanup(func() { redirectOn = old })
	if theRedirector() == nil {
		if os.Getenv("TETHER_E2E") == "1" {
			t.Fatalf("connect redirect unavailable: %v", redirect.err)
		}
		t.Skipf("connect redirect unavailable: %v", redirect.err)
	}
}

func TestRedirectKeyValue(t *testing.T) {
	for _, tt := range []struct {
		cookie uint64
		dst    string
		key    []byte
		value  []byte
	}{
		{1, "127.0.0.1:8080", []byte{1, 0, 0, 0, 0, 0, 0, 0, 127, 0, 0, 1, 0x1f, 0x90, 0, 0}, []byte{127, 0, 0, 1, 0x1f, 0x90, 0, 0}},
		{0x0102030405060708, "10.1.2.3:1", []byte{8, 7, 6, 5, 4, 3, 2, 1, 10, 1, 2, 3, 0, 1, 0, 0}, []byte{10, 1, 2, 3, 0, 1, 0, 0}},
		{2, "[::1]:8080", []byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x1f, 0x90, 0, 0, 0, 0, 0, 0},
			[]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x1f, 0x90, 0, 0}},
	} {
		ap := netip.MustParseAddrPort(tt.dst)
		if k := redirectKey(tt.cookie, ap); !bytes.Equal(k, tt.key) {
			t.Errorf("redirectKey(%d, %s) = %v, want %v", tt.cookie, ap, k, tt.key)
		}
		if v := redirectValue(ap); !bytes.Equal(v, tt.value) {
			t.Errorf("redirectValue(%s) = %v, want %v", ap, v, tt.value)
		}
	}
}

func TestRedirectFrom(t *testing.T) {
	for _, tt := range []struct{ addr, want string }{
		{"127.0.0.1", "127.0.0.1"},
		{"127.1.2.3", "127.1.2.3"},
		{"0.0.0.0", "127.0.0.1"},
		{"192.168.1.1", ""},
		{"::1", "::1"},
		{"::", "::1"},
		{"fd00::1", ""},
	} {
		got, ok := redirectFrom(netip.MustParseAddr(tt.addr))
		if (tt.want == "") == ok || (ok && got.String() != tt.want) {
			t.Errorf("redirectFrom(%s) = %v %v, want %q", tt.addr, got, ok, tt.want)
		}
	}
}

func TestCgroup2Root(t *testing.T) {
	for _, tt := range []struct{ name, mountinfo, want string }{
		{"unified", "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n", "/sys/fs/cgroup"},
		{"hybrid", "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n" +
			"32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n" +
			"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", "/sys/fs/cgroup/unified"},
		{"only a sub-tree bind-mounted", "41 31 0:38 /user.slice /mnt/cg rw - cgroup2 cgroup2 rw\n", ""},
		{"v1 only", "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n", ""},
		{"optional fields", "41 31 0:38 / /cg rw shared:1 master:2 - cgroup2 none rw\n", "/cg"},
	} {
		if got := cgroup2Root(strings.NewReader(tt.mountinfo)); got != tt.want {
			t.Errorf("%s: cgroup2Root = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestProgJumps: every conditional jump of the programs lands on the
// final "return 1" (the verifier checks the rest).
func TestProgJumps(t *testing.T) {
	for _, tt := range []struct {
		name  string
		p     []bpfInsn
		jumps int
	}{
		{"connect4", connectProg(inet4, 3, 4), 4},
		{"connect6", connectProg(inet6, 3, 4), 7},
		{"peer4", peerProg(inet4, 4), 1},
		{"peer6", peerProg(inet6, 4), 1},
	} {
		p := tt.p
		allow := len(p) - 2
		if p[allow] != ins(0xb7, 0, 0, 0, 1) || p[allow+1] != ins(0x95, 0, 0, 0, 0) {
			t.Fatalf("%s does not end with return 1: %v", tt.name, p[allow:])
		}
		jumps := 0
		for i, x := range p {
			if x.Code == 0x55 || x.Code == 0x15 {
				jumps++
				if to := i + 1 + int(x.Off); to != allow {
					t.Errorf("%s: jump at %d goes to %d, want %d", tt.name, i, to, allow)
				}
			}
		}
		if jumps != tt.jumps {
			t.Errorf("%s: %d jumps, want %d", tt.name, jumps, tt.jumps)
		}
	}
}

// redirectPair is a "host" namespace (where the daemon holds the port)
// joined by a veth to a "sandbox" namespace whose server at sandboxAddr
// reports the peer address it sees, echoes until EOF, then says "bye".
type redirectPair struct {
	host, sandbox     string // /run/netns paths
	backend, backend6 netip.AddrPort
}

func newRedirectPair(t *testing.T, port uint16) *redirectPair {
	t.Helper()
	testutil.RequireRoot(t)
	h, s := testutil.NetNS(t, "t19a2h"), testutil.NetNS(t, "t19a2s")
	for _, c := range [][]string{
		{"-n", h, "link", "add", "v0", "type", "veth", "peer", "name", "eth0", "netns", s},
		{"-n", h, "addr", "add", "10.219.2.1/24", "dev", "v0"},
		{"-n", h, "link", "set", "v0", "up"},
		{"-n", s, "addr", "add", "10.219.2.2/24", "dev", "eth0"},
		{"-n", s, "link", "set", "eth0", "up"},
		{"-n", h, "addr", "add", "fd19:a2::1/64", "dev", "v0", "nodad"},
		{"-n", s, "addr", "add", "fd19:a2::2/64", "dev", "eth0", "nodad"},
	} {
		testutil.Must(t, "ip", c...)
	}
	p := &redirectPair{host: "/run/netns/" + h, sandbox: "/run/netns/" + s,
		backend:  netip.AddrPortFrom(netip.MustParseAddr("10.219.2.2"), port),
		backend6: netip.AddrPortFrom(netip.MustParseAddr("fd19:a2::2"), port)}
	reportingServer(t, p.sandbox, p.backend.String(), "")
	reportingServer(t, p.sandbox, p.backend6.String(), "")
	return p
}

// reportingServer listens on addr in ns: each connection gets the peer
// address it came from (or greeting when set) on a line, then its own
// bytes back until EOF, then "bye" and a FIN.
func reportingServer(t *testing.T, ns, addr, greeting string) {
	t.Helper()
	var ln net.Listener
	in(t, ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err })
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line := greeting
				if line == "" {
					line = c.RemoteAddr().String()
				}
				fmt.Fprintln(c, line)
				io.Copy(c, c)
				c.Write([]byte("bye"))
			}()
		}
	}()
}

// exchange is one client connection's view.
type exchange struct {
	line  string         // the server's first line: the peer it saw, or its greeting
	local netip.AddrPort // the client's address
	peer  netip.AddrPort // getpeername on the client
}

// talk connects from ns to addr (after binding bindIP when set), sends
// 256 KiB, half-closes and checks that the same bytes, "bye" and a FIN come
// back.
func talk(t *testing.T, ns, addr, bindIP string) (exchange, error) {
	t.Helper()
	var c *net.TCPConn
	var x exchange
	err := func() error {
		d := net.Dialer{Timeout: 5 * time.Second}
		if bindIP != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(bindIP)}
		}
		var err error
		in(t, ns, func() error {
			var nc net.Conn
			nc, err = d.Dial("tcp", addr)
			if err == nil {
				c = nc.(*net.TCPConn)
			}
			return nil
		})
		return err
	}()
	if err != nil {
		return x, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(hangGuard))
	x.local = c.LocalAddr().(*net.TCPAddr).AddrPort()
	rc, _ := c.SyscallConn()
	var sa unix.Sockaddr
	var perr error
	rc.Control(func(fd uintptr) { sa, perr = unix.Getpeername(int(fd)) })
	if perr != nil {
		return x, fmt.Errorf("getpeername: %w", perr)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		x.peer = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		x.peer = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	data := make([]byte, 256<<10)
	rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		werr <- errors.Join(err, c.CloseWrite())
	}()
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return x, fmt.Errorf("first line: %w", err)
	}
	x.line = strings.TrimSpace(line)
	rest, err := io.ReadAll(br)
	if err != nil {
		return x, fmt.Errorf("read: %w", err)
	}
	if err := <-werr; err != nil {
		return x, err
	}
	if want := append(slices.Clone(data), "bye"...); !bytes.Equal(rest, want) {
		return x, fmt.Errorf("got %d bytes back, want the %d sent and bye", len(rest), len(data))
	}
	return x, nil
}

// redirected: the server saw the client's own address (same port): no
// second connection was made.
func (x exchange) redirected() bool {
	return x.line == x.local.String()
}

func TestRedirectLoopbackPublish(t *testing.T) {
	withRedirect(t)
	p := newRedirectPair(t, 41310)
	// Another "host" namespace with its own server on the same 127.0.0.1:P.
	other := "/run/netns/" + testutil.NetNS(t, "t19a2o")
	reportingServer(t, other, "127.0.0.1:41311", "other")

	h := holdIn(t, p.host, "tcp", "127.0.0.1", 41311)
	if err := h.Proxy(p.backend); err != nil {
		t.Fatal(err)
	}
	wild := holdIn(t, p.host, "tcp", "0.0.0.0", 41312)
	if err := wild.Proxy(p.backend); err != nil {
		t.Fatal(err)
	}
	h6 := holdIn(t, p.host, "tcp", "::1", 41313)
	if err := h6.Proxy(p.backend6); err != nil {
		t.Fatal(err)
	}
	wild6 := holdIn(t, p.host, "tcp", "::", 41314)
	if err := wild6.Proxy(p.backend6); err != nil {
		t.Fatal(err)
	}
	if h.redirector == nil || wild.redirector == nil || h6.redirector == nil || wild6.redirector == nil {
		t.Fatal("no redirect entry made")
	}
	for _, addr := range []string{"127.0.0.1:41311", "127.0.0.1:41312", "[::1]:41313", "[::1]:41314"} {
		x, err := talk(t, p.host, addr, "")
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if !x.redirected() {
			t.Errorf("%s: the sandbox saw %s, the client is %s: not redirected", addr, x.line, x.local)
		}
		if x.peer.String() != addr {
			t.Errorf("%s: getpeername = %s", addr, x.peer)
		}
	}
	// A client that bound 127.0.0.1 first is served by the proxy.
	x, err := talk(t, p.host, "127.0.0.1:41311", "127.0.0.1")
	if err != nil {
		t.Fatalf("bound client: %v", err)
	}
	if x.redirected() || !strings.HasPrefix(x.line, "10.219.2.1:") {
		t.Errorf("bound client: the sandbox saw %s (client %s), want the proxy's connection", x.line, x.local)
	}
	x, err = talk(t, p.host, "[::1]:41313", "::1")
	if err != nil {
		t.Fatalf("bound client: %v", err)
	}
	if x.redirected() || !strings.HasPrefix(x.line, "[fd19:a2::1]:") {
		t.Errorf("bound IPv6 client: the sandbox saw %s (client %s), want the proxy's connection", x.line, x.local)
	}
	// An IPv6 publish of an IPv4 backend is the proxy's.
	cross := holdIn(t, p.host, "tcp", "::1", 41315)
	if err := cross.Proxy(p.backend); err != nil {
		t.Fatal(err)
	}
	if cross.redirector != nil {
		t.Error("[::1] -> IPv4 backend: redirect entry made")
	}
	// Another namespace's 127.0.0.1:P is its own.
	if x, err := talk(t, other, "127.0.0.1:41311", ""); err != nil || x.line != "other" {
		t.Errorf("other namespace: %+v %v, want its own server", x, err)
	}
	// The sandbox's 127.0.0.1:P is not redirected either (nothing listens).
	if _, err := talk(t, p.sandbox, "127.0.0.1:41311", ""); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("sandbox to its own 127.0.0.1:41311: %v, want connection refused", err)
	}
	// After unpublishing, the port is closed again.
	h.Close()
	h6.Close()
	for _, addr := range []string{"127.0.0.1:41311", "[::1]:41313"} {
		if _, err := talk(t, p.host, addr, ""); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%s after Close: %v, want connection refused", addr, err)
		}
	}
}

// TestRedirectOff: with the redirect off the proxy serves as before.
func TestRedirectOff(t *testing.T) {
	p := newRedirectPair(t, 41320)
	h := holdIn(t, p.host, "tcp", "127.0.0.1", 41321)
	if err := h.Proxy(p.backend); err != nil {
		t.Fatal(err)
	}
	x, err := talk(t, p.host, "127.0.0.1:41321", "")
	if err != nil {
		t.Fatal(err)
	}
	if x.redirected() || x.peer.String() != "127.0.0.1:41321" {
		t.Errorf("redirect off: the sandbox saw %s, client %s, peer %s: want the proxy", x.line, x.local, x.peer)
	}
}

const redirectChildEnv = "PORTMAP_REDIRECT_CHILD"

// TestRedirectChildDaemon is the "daemon" of TestRedirectDetachOnKill, run
// in a child process: it publishes, prints its program IDs and waits.
func TestRedirectChildDaemon(t *testing.T) {
	v := os.Getenv(redirectChildEnv)
	if v == "" {
		t.Skip("child of TestRedirectDetachOnKill")
	}
	f := strings.Fields(v) // host namespace, port, backend
	port, _ := strconv.Atoi(f[1])
	redirectOn = true
	h := holdIn(t, f[0], "tcp", "127.0.0.1", uint16(port))
	if err := h.Proxy(netip.MustParseAddrPort(f[2])); err != nil {
		t.Fatal(err)
	}
	r := theRedirector()
	if r == nil || h.redirector == nil {
		fmt.Println("unavailable", redirect.err)
		return
	}
	fmt.Println("ids", r.progIDs[0], r.progIDs[1], r.progIDs[2], r.progIDs[3])
	time.Sleep(time.Hour)
}

// TestRedirectDetachOnKill: a daemon killed with SIGKILL leaves no program
// attached and nothing redirected.
func TestRedirectDetachOnKill(t *testing.T) {
	withRedirect(t) // the kernel can do it
	p := newRedirectPair(t, 41330)
	cmd := exec.Command(os.Args[0], "-test.run=^TestRedirectChildDaemon$", "-test.v")
	cmd.Env = append(os.Environ(), redirectChildEnv+"="+p.host+" 41331 "+p.backend.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var ids []uint32
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && f[0] == "unavailable" {
			t.Fatalf("child: %s", sc.Text())
		}
		if len(f) == 5 && f[0] == "ids" {
			for _, s := range f[1:] {
				n, _ := strconv.ParseUint(s, 10, 32)
				ids = append(ids, uint32(n))
			}
			break
		}
	}
	if len(ids) != 4 {
		t.Fatal("child printed no program IDs")
	}
	go io.Copy(io.Discard, out)
	attached := func() []uint32 {
		cfd, err := unix.Open(redirect.r.cgroup, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(cfd)
		var got []uint32
		for _, at := range []uint32{attachInet4Connect, attachInet4Peername, attachInet6Connect, attachInet6Peername} {
			all, err := bpfQueryCgroup(cfd, at)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range all {
				if slices.Contains(ids, id) {
					got = append(got, id)
				}
			}
		}
		return got
	}
	if got := attached(); len(got) != 4 {
		t.Fatalf("child's programs attached: %v, want %v", got, ids)
	}
	x, err := talk(t, p.host, "127.0.0.1:41331", "")
	if err != nil || !x.redirected() {
		t.Fatalf("child's publish: %+v %v, want redirected", x, err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	// The kernel releases a link when its last fd closes; the process's fds
	// are closed by the time wait returns.
	if got := attached(); len(got) != 0 {
		t.Errorf("after SIGKILL, still attached: %v", got)
	}
	if _, err := talk(t, p.host, "127.0.0.1:41331", ""); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("after SIGKILL: %v, want connection refused", err)
	}
}
