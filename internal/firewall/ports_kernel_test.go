package firewall

// Published ports with real traffic, without the daemon. Topology, all in
// namespaces the test creates:
//
//	outside (198.51.100.2) --veth-- host (198.51.100.1, .3; bridge tth-br 10.88.0.1/24)
//	                                  |
//	                                sandbox (10.88.0.2, default via .1)
//
// The host namespace holds the table, installed by the NFT backend.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

type portTopo struct {
	host, sandbox, outside string // namespace paths
	hostName               string
	net                    Network
}

func newPortTopo(t *testing.T) *portTopo {
	t.Helper()
	testutil.RequireRoot(t)
	h, s, o := testutil.NetNS(t, "tth-fwh"), testutil.NetNS(t, "tth-fws"), testutil.NetNS(t, "tth-fwo")
	ip := func(args ...string) { t.Helper(); testutil.Must(t, "ip", args...) }
	ip("-n", h, "link", "add", "tth-br", "type", "bridge")
	ip("-n", h, "addr", "add", "10.88.0.1/24", "dev", "tth-br")
	ip("-n", h, "link", "set", "tth-br", "up")
	ip("-n", h, "link", "add", "tth-v0", "type", "veth", "peer", "name", "eth0", "netns", s)
	ip("-n", h, "link", "set", "tth-v0", "master", "tth-br", "up")
	// As the bridge driver must do for a kernel-path hairpin: with
	// br_netfilter, the DNATed frame is bridged back out the port it came in.
	ip("-n", h, "link", "set", "tth-v0", "type", "bridge_slave", "hairpin", "on")
	ip("-n", s, "addr", "add", "10.88.0.2/24", "dev", "eth0")
	ip("-n", s, "link", "set", "eth0", "up")
	ip("-n", s, "route", "add", "default", "via", "10.88.0.1")
	ip("-n", h, "link", "add", "tth-up", "type", "veth", "peer", "name", "eth0", "netns", o)
	ip("-n", h, "addr", "add", "198.51.100.1/24", "dev", "tth-up")
	ip("-n", h, "addr", "add", "198.51.100.3/24", "dev", "tth-up")
	ip("-n", h, "link", "set", "tth-up", "up")
	ip("-n", o, "addr", "add", "198.51.100.2/24", "dev", "eth0")
	ip("-n", o, "link", "set", "eth0", "up")
	if out, err := testutil.InNS(h, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatalf("ip_forward: %v: %s", err, out)
	}
	p := &portTopo{host: "/run/netns/" + h, sandbox: "/run/netns/" + s, outside: "/run/netns/" + o, hostName: h,
		net: Network{ID: "n", Bridge: "tth-br", Subnet: netip.MustParsePrefix("10.88.0.0/24"), Masquerade: true}}
	p.serve(t)
	return p
}

// serve runs, in the sandbox, a TCP server on :80 that answers
// "sandbox <client address>" and a UDP server on :53 that answers "pong
// <client address>".
func (p *portTopo) serve(t *testing.T) {
	var l net.Listener
	var u net.PacketConn
	err := netns.Do(p.sandbox, func() (err error) {
		if l, err = net.Listen("tcp4", ":80"); err != nil {
			return err
		}
		u, err = net.ListenPacket("udp4", ":53")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); u.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "sandbox %s", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := u.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = u.WriteTo([]byte("pong "+from.(*net.UDPAddr).IP.String()), from)
		}
	}()
}

// tcp connects from namespace ns to addr and returns what the server said.
func tcp(ns, addr string) (string, error) {
	var out []byte
	err := netns.Do(ns, func() error {
		c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		out, err = io.ReadAll(c)
		return err
	})
	return string(out), err
}

func udp(ns, addr string) (string, error) {
	var out string
	err := netns.Do(ns, func() error {
		c, err := net.Dial("udp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		out = string(buf[:n])
		return err
	})
	return out, err
}

func (p *portTopo) nft(t *testing.T, loopback bool, ports ...PortMapping) *NFT {
	t.Helper()
	f, err := NewNFTWith(Options{LoopbackDNAT: loopback, NetNS: p.host})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Sync(context.Background(), []Network{p.net}, ports); err != nil {
		t.Fatal(err)
	}
	return f
}

func wantReply(t *testing.T, what string, got string, err error, want string) {
	t.Helper()
	if err != nil || got != want {
		t.Errorf("%s: got %q, %v; want %q", what, got, err, want)
	}
}

func wantRefused(t *testing.T, what string, got string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: connected and got %q, want no connection", what, got)
	}
}

func TestKernelPortsTraffic(t *testing.T) {
	p := newPortTopo(t)
	sb := netip.MustParseAddr("10.88.0.2")
	anyTCP := PortMapping{Proto: "tcp", HostPort: 8080, SandboxIP: sb, SandboxPort: 80}
	oneTCP := PortMapping{Proto: "tcp", HostIP: netip.MustParseAddr("198.51.100.1"), HostPort: 8081, SandboxIP: sb, SandboxPort: 80}
	anyUDP := PortMapping{Proto: "udp", HostPort: 5353, SandboxIP: sb, SandboxPort: 53}
	f := p.nft(t, false)
	if err := f.AddPorts(context.Background(), []PortMapping{anyTCP, oneTCP, anyUDP}); err != nil {
		t.Fatal(err)
	}
	dump, err := testutil.InNS(p.hostName, "nft", "list", "table", "ip", TableName)
	if err != nil || !strings.Contains(dump, "dnat ip to ip daddr . meta l4proto . th dport map @ports") {
		t.Errorf("nft list: %v\n%s", err, dump)
	}
	t.Logf("LoopbackDNAT=false:\n%s", dump)

	out, err := tcp(p.outside, "198.51.100.1:8080")
	wantReply(t, "outside -> any", out, err, "sandbox 198.51.100.2")
	out, err = tcp(p.outside, "198.51.100.3:8080")
	wantReply(t, "outside -> any, second address", out, err, "sandbox 198.51.100.2")
	out, err = tcp(p.outside, "198.51.100.1:8081")
	wantReply(t, "outside -> specific", out, err, "sandbox 198.51.100.2")
	out, err = tcp(p.outside, "198.51.100.3:8081")
	wantRefused(t, "outside -> specific port through another address", out, err)
	out, err = tcp(p.host, "198.51.100.1:8080")
	wantReply(t, "host -> any", out, err, "sandbox 198.51.100.1")
	out, err = tcp(p.sandbox, "198.51.100.1:8080")
	wantReply(t, "hairpin", out, err, "sandbox 10.88.0.1") // masqueraded: the reply comes back through the host
	out, err = udp(p.outside, "198.51.100.1:5353")
	wantReply(t, "udp", out, err, "pong 198.51.100.2")
	out, err = tcp(p.host, "127.0.0.1:8080")
	wantRefused(t, "loopback with LoopbackDNAT=false", out, err)

	if err := f.RemovePorts(context.Background(), []PortMapping{anyTCP, anyUDP}); err != nil {
		t.Fatal(err)
	}
	out, err = tcp(p.outside, "198.51.100.1:8080")
	wantRefused(t, "outside -> removed port", out, err)
	out, err = tcp(p.outside, "198.51.100.1:8081")
	wantReply(t, "outside -> specific, still published", out, err, "sandbox 198.51.100.2")
}

func TestKernelPortsLoopback(t *testing.T) {
	p := newPortTopo(t)
	sb := netip.MustParseAddr("10.88.0.2")
	ports := []PortMapping{
		{Proto: "tcp", HostPort: 8080, SandboxIP: sb, SandboxPort: 80},
		{Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8082, SandboxIP: sb, SandboxPort: 80},
	}
	p.nft(t, true, ports...)
	dump, _ := testutil.InNS(p.hostName, "nft", "list", "table", "ip", TableName)
	t.Logf("LoopbackDNAT=true:\n%s", dump)
	rl, err := testutil.InNS(p.hostName, "sysctl", "-n", "net.ipv4.conf.tth-br.route_localnet")
	if err != nil || strings.TrimSpace(rl) != "1" {
		t.Errorf("route_localnet on tth-br = %q, %v; want 1", rl, err)
	}
	out, err := tcp(p.host, "127.0.0.1:8080")
	wantReply(t, "host -> 127.0.0.1, any", out, err, "sandbox 10.88.0.1") // masqueraded to the bridge address
	out, err = tcp(p.host, "127.0.0.1:8082")
	wantReply(t, "host -> 127.0.0.1, bound there", out, err, "sandbox 10.88.0.1")
	out, err = tcp(p.outside, "198.51.100.1:8082")
	wantRefused(t, "outside -> port bound to 127.0.0.1", out, err)
	out, err = tcp(p.host, "198.51.100.1:8082")
	wantRefused(t, "host -> port bound to 127.0.0.1 through another address", out, err)
}

// BenchmarkKernelAddPorts: one AddPorts of one port (one element, its own
// batch) with 0 and with 999 ports published.
func BenchmarkKernelAddPorts(b *testing.B) {
	for _, present := range []int{0, 999} {
		b.Run(fmt.Sprint("present=", present), func(b *testing.B) {
			_, fd := kernelNS(b)
			f := kernelNFT(b, fd)
			ctx := context.Background()
			if err := f.Sync(ctx, nil, nil); err != nil {
				b.Fatal(err)
			}
			port := func(i int) PortMapping {
				return PortMapping{Proto: "tcp", HostPort: uint16(10000 + i), SandboxIP: netip.MustParseAddr("10.88.0.2"), SandboxPort: 80}
			}
			for i := range present {
				if err := f.AddPorts(ctx, []PortMapping{port(i)}); err != nil {
					b.Fatal(err)
				}
			}
			x := []PortMapping{port(present)}
			for b.Loop() {
				if err := f.AddPorts(ctx, x); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := f.RemovePorts(ctx, x); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			if f.fallbacks != 0 {
				b.Errorf("%d fallbacks", f.fallbacks)
			}
		})
	}
}
