package ovs_test

// Kernel tests: a private ovsdb-server and an ovs-vswitchd running in a
// "host" namespace the test creates (ovstest.Start), the driver bound to
// that namespace (ovs.NewAt), sandbox namespaces set up as the engine sets
// them up. Traffic is real (ping from inside the namespaces, TCP from Go
// sockets opened inside them). As root they
// run; under TETHER_E2E=1 without root or without openvswitch-switch they
// fail.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/ovs"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/nlutil"
	"github.com/tether-net/tether/internal/ovsdb"
	"github.com/tether-net/tether/internal/ovsdb/ovstest"
	"github.com/tether-net/tether/internal/testutil"
)

var ctx = context.Background()

type host struct {
	ns, path string
	h        *netlink.Handle
	d        *ovs.Driver
	db       string
	restart  func()
}

func newHost(t *testing.T) *host {
	t.Helper()
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-oh")
	db, restart := ovstest.Start(t, ns)
	path := "/run/netns/" + ns
	h, err := tns.NewHandle(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return &host{ns: ns, path: path, h: h, d: ovs.NewAt(db, h, path), db: db, restart: restart}
}

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// client is a database connection for checking and breaking things.
func (hs *host) client(t *testing.T) *ovsdb.Client {
	t.Helper()
	c, err := ovsdb.Dial(ctx, hs.db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// network creates an OVS network; subnet6 "" leaves IPv6 out.
func (hs *host) network(t *testing.T, opts map[string]string, subnet, gw, subnet6, gw6 string) *driver.Network {
	t.Helper()
	n := hs.spec(opts, subnet, gw, subnet6, gw6)
	if err := hs.d.CheckOptions(n); err != nil {
		t.Fatal(err)
	}
	if err := hs.d.CreateNetwork(ctx, n); err != nil {
		t.Fatalf("create network: %v", err)
	}
	t.Cleanup(func() {
		if err := hs.d.DeleteNetwork(ctx, n); err != nil {
			t.Errorf("delete network: %v", err)
		}
	})
	return n
}

func (hs *host) spec(opts map[string]string, subnet, gw, subnet6, gw6 string) *driver.Network {
	n := &driver.Network{ID: newID(), Name: "n" + testutil.Suffix(), BridgeName: "to-" + testutil.Suffix(), MTU: 1500, ICC: true,
		Subnet: netip.MustParsePrefix(subnet), Gateway: netip.MustParseAddr(gw), Options: opts}
	if subnet6 != "" {
		n.Subnet6, n.Gateway6 = netip.MustParsePrefix(subnet6), netip.MustParseAddr(gw6)
	}
	return n
}

type sandbox struct {
	ns, path string
	ep       *driver.Endpoint
}

// join creates a sandbox namespace as the engine does and joins it to n.
func (hs *host) join(t *testing.T, n *driver.Network, addr, addr6 string) *sandbox {
	t.Helper()
	ns := testutil.NetNS(t, "tth-os")
	testutil.Must(t, "ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1",
		"net.ipv6.conf.default.accept_ra=0", "net.ipv6.conf.all.accept_ra=0")
	ep := &driver.Endpoint{ID: newID(), IfName: "eth0", DefaultRoute: true,
		Address: netip.MustParsePrefix(addr), Gateway: n.Gateway}
	ep.MAC = driver.MACFromIP(ep.Address.Addr())
	if addr6 != "" {
		ep.Address6, ep.Gateway6 = netip.MustParsePrefix(addr6), n.Gateway6
	}
	s := &sandbox{ns: ns, path: "/run/netns/" + ns, ep: ep}
	if err := hs.d.Join(ctx, n, ep, s.path); err != nil {
		t.Fatalf("join %s: %v", ns, err)
	}
	t.Cleanup(func() {
		if err := hs.d.Leave(ctx, n, ep, s.path); err != nil {
			t.Errorf("leave %s: %v", ns, err)
		}
	})
	return s
}

func ping(ns, addr string) (string, error) {
	return testutil.InNS(ns, "ping", "-n", "-q", "-c", "1", "-W", "1", addr)
}

// mustPing fails unless a ping gets through (three tries: the first may
// wait for neighbour resolution or MAC learning).
func mustPing(t *testing.T, ns, addr string) {
	t.Helper()
	var out string
	var err error
	for range 3 {
		if out, err = ping(ns, addr); err == nil {
			return
		}
	}
	t.Errorf("ping %s from %s: %v\n%s", addr, ns, err, out)
}

func mustNotPing(t *testing.T, ns, addr, why string) {
	t.Helper()
	if out, err := ping(ns, addr); err == nil {
		t.Errorf("ping %s from %s got through: %s\n%s", addr, ns, why, out)
	}
}

// tcpExchange opens a TCP connection from the namespace at fromPath to a
// listener on addr in the namespace at toPath (sockets opened inside the
// namespaces from Go) and sends 256 KiB each way: many full-sized
// segments, whose checksums a transmit offload leaves to the device.
func tcpExchange(fromPath, toPath, addr string) error {
	var ln net.Listener
	err := tns.Do(toPath, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(addr, "0"))
		return err
	})
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	up, down := make([]byte, 256<<10), make([]byte, 256<<10)
	_, _ = rand.Read(up)
	_, _ = rand.Read(down)
	served := make(chan error, 1)
	go func() { served <- serveOnce(ln, up, down) }()
	var c net.Conn
	err = tns.Do(fromPath, func() (err error) {
		c, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		return err
	})
	if err != nil {
		ln.Close()
		<-served
		return fmt.Errorf("connect to %s: %w", ln.Addr(), err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(up)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		wrote <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-wrote; werr != nil {
		return fmt.Errorf("send to %s: %w", ln.Addr(), werr)
	}
	if err != nil {
		return fmt.Errorf("receive from %s: %w (%d bytes)", ln.Addr(), err, len(got))
	}
	if !bytes.Equal(got, down) {
		return fmt.Errorf("received %d bytes from %s, not what it sent", len(got), ln.Addr())
	}
	return <-served
}

// serveOnce accepts one connection, checks it receives want and sends
// reply meanwhile.
func serveOnce(ln net.Listener, want, reply []byte) error {
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	sent := make(chan error, 1)
	go func() {
		_, err := c.Write(reply)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		sent <- err
	}()
	got, err := io.ReadAll(c)
	if err == nil && !bytes.Equal(got, want) {
		err = fmt.Errorf("listener got %d bytes, not what was sent", len(got))
	}
	return errors.Join(err, <-sent)
}

// mustTCP fails unless a TCP exchange from one namespace to addr in
// another gets through.
func mustTCP(t *testing.T, fromPath, toPath, addr string) {
	t.Helper()
	if err := tcpExchange(fromPath, toPath, addr); err != nil {
		t.Errorf("TCP from %s to %s in %s: %v", fromPath, addr, toPath, err)
	}
}

// udpExchange sends a datagram from the namespace at fromPath to a socket
// on addr in the namespace at toPath, which answers it (three tries: a
// datagram may be lost while neighbours resolve).
func udpExchange(fromPath, toPath, addr string) error {
	var srv net.PacketConn
	err := tns.Do(toPath, func() (err error) {
		srv, err = net.ListenPacket("udp", net.JoinHostPort(addr, "0"))
		return err
	})
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteTo(buf[:n], from)
		}
	}()
	var c net.Conn
	if err := tns.Do(fromPath, func() (err error) {
		c, err = net.Dial("udp", srv.LocalAddr().String())
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	msg := make([]byte, 1200)
	_, _ = rand.Read(msg)
	got := make([]byte, 2048)
	for range 3 {
		if _, err = c.Write(msg); err != nil {
			continue
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		var n int
		if n, err = c.Read(got); err == nil && bytes.Equal(got[:n], msg) {
			return nil
		}
	}
	return fmt.Errorf("UDP to %s: no answer: %v", srv.LocalAddr(), err)
}

func mustUDP(t *testing.T, fromPath, toPath, addr string) {
	t.Helper()
	if err := udpExchange(fromPath, toPath, addr); err != nil {
		t.Errorf("UDP from %s to %s in %s: %v", fromPath, addr, toPath, err)
	}
}

func (hs *host) hasAddr(t *testing.T, link, addr string) bool {
	t.Helper()
	out, err := testutil.InNS(hs.ns, "ip", "-o", "addr", "show", "dev", link)
	return err == nil && strings.Contains(out, " "+addr+" ")
}

// TestTwoSandboxes: two sandboxes on an OVS network reach each other and
// the gateway over IPv4 and IPv6; the database holds what the package
// documents; Leave and DeleteNetwork remove it all, twice over.
func TestTwoSandboxes(t *testing.T) {
	hs := newHost(t)
	c := hs.client(t)
	n := hs.spec(nil, "10.81.0.0/24", "10.81.0.1", "fd81::/64", "fd81::1")
	if err := hs.d.CreateNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := hs.d.CreateNetwork(ctx, n); err != nil { // idempotent
		t.Fatalf("again: %v", err)
	}
	a := hs.join(t, n, "10.81.0.2/24", "fd81::2/64")
	b := hs.join(t, n, "10.81.0.3/24", "fd81::3/64")
	mustPing(t, a.ns, "10.81.0.3")
	mustPing(t, b.ns, "10.81.0.2")
	mustPing(t, a.ns, "10.81.0.1")
	mustPing(t, a.ns, "fd81::3")
	mustPing(t, b.ns, "fd81::1")
	// TCP, both families, between the sandboxes and with the host through
	// the gateway (the host dials from the gateway address).
	mustTCP(t, a.path, b.path, "10.81.0.3")
	mustTCP(t, b.path, a.path, "fd81::2")
	mustTCP(t, hs.path, a.path, "10.81.0.2")
	mustTCP(t, a.path, hs.path, "10.81.0.1")
	mustTCP(t, hs.path, b.path, "fd81::3")
	mustTCP(t, b.path, hs.path, "fd81::1")
	mustUDP(t, a.path, b.path, "10.81.0.3")
	mustUDP(t, a.path, hs.path, "10.81.0.1") // DNS to the gateway is UDP
	mustUDP(t, b.path, hs.path, "fd81::1")
	if !hs.hasAddr(t, n.BridgeName, "10.81.0.1/24") || !hs.hasAddr(t, n.BridgeName, "fd81::1/64") {
		t.Errorf("gateway addresses not on %s", n.BridgeName)
	}

	br, err := c.FindBridge(ctx, n.BridgeName)
	if err != nil || br == nil || br.ExternalIDs[ovs.KeyOwner] != n.ID || br.DatapathType != "netdev" {
		t.Fatalf("bridge %+v %v", br, err)
	}
	ports, err := c.ListPorts(ctx, n.BridgeName)
	if err != nil || len(ports) != 3 {
		t.Fatalf("ports %+v %v", ports, err)
	}
	for _, p := range ports {
		if p.Tag != 0 || p.ExternalIDs[ovs.KeyNetwork] != n.ID {
			t.Errorf("port %+v: want access VLAN 0 marked with the network", p)
		}
	}

	// Tear down by hand (the cleanups then find it all gone: idempotent).
	for _, s := range []*sandbox{a, b} {
		if err := hs.d.Leave(ctx, n, s.ep, s.path); err != nil {
			t.Fatal(err)
		}
		if p, _ := c.FindPort(ctx, s.ep.HostIfName); p != nil {
			t.Errorf("port %s left after Leave", s.ep.HostIfName)
		}
		if _, err := hs.h.LinkByName(s.ep.HostIfName); err == nil {
			t.Errorf("host end %s left after Leave", s.ep.HostIfName)
		}
	}
	for range 2 {
		if err := hs.d.DeleteNetwork(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := c.FindBridge(ctx, n.BridgeName); b != nil {
		t.Errorf("bridge left: %+v", b)
	}
}

// TestVLANs: two networks on one shared OVS bridge with different VLAN
// tags cannot reach each other even at layer 2 (a sandbox of one given an
// address in the other's subnet stays unreachable), until the test puts
// its port on the other's VLAN, which proves the tag is what separates
// them. A third network on a VLAN in use is refused. The shared bridge
// stays until its last network is deleted.
func TestVLANs(t *testing.T) {
	hs := newHost(t)
	c := hs.client(t)
	shared := "tsh-" + testutil.Suffix()
	na := hs.network(t, map[string]string{ovs.OptBridge: shared, ovs.OptVLAN: "10"}, "10.82.1.0/24", "10.82.1.1", "", "")
	nb := hs.network(t, map[string]string{ovs.OptBridge: shared, ovs.OptVLAN: "20"}, "10.82.2.0/24", "10.82.2.1", "", "")
	a1 := hs.join(t, na, "10.82.1.2/24", "")
	a2 := hs.join(t, na, "10.82.1.3/24", "")
	b1 := hs.join(t, nb, "10.82.2.2/24", "")
	mustPing(t, a1.ns, "10.82.1.3")
	mustPing(t, a1.ns, "10.82.1.1")
	mustPing(t, b1.ns, "10.82.2.1")
	_ = a2

	testutil.Must(t, "ip", "-n", b1.ns, "addr", "add", "10.82.1.99/24", "dev", "eth0")
	mustNotPing(t, a1.ns, "10.82.1.99", "VLAN 20 reached from VLAN 10")
	mustNotPing(t, a1.ns, "10.82.2.2", "network B reached from network A")

	p, err := c.FindPort(ctx, b1.ep.HostIfName)
	if err != nil || p == nil || p.Tag != 20 {
		t.Fatalf("port of b1: %+v %v", p, err)
	}
	if _, err := c.Transact(ctx, ovsdb.DB, ovsdb.Update("Port", ovsdb.Row{"tag": 10}, ovsdb.Cond("_uuid", "==", p.UUID))); err != nil {
		t.Fatal(err)
	}
	if err := c.Applied(ctx); err != nil {
		t.Fatal(err)
	}
	mustPing(t, a1.ns, "10.82.1.99") // the control: same tag, same segment
	if repaired, err := hs.d.Repair(ctx, nb, b1.ep, b1.path, nil); err != nil || !repaired {
		t.Fatalf("Repair of a port on the wrong VLAN: %v %v", repaired, err)
	}
	if repaired, _ := hs.d.Repair(ctx, nb, b1.ep, b1.path, nil); repaired {
		t.Error("repaired an intact endpoint")
	}
	mustNotPing(t, a1.ns, "10.82.1.99", "Repair did not put b1 back on VLAN 20")

	t.Run("same VLAN refused", func(t *testing.T) {
		n := hs.spec(map[string]string{ovs.OptBridge: shared, ovs.OptVLAN: "10"}, "10.82.3.0/24", "10.82.3.1", "", "")
		err := hs.d.CreateNetwork(ctx, n)
		if err == nil || !strings.Contains(err.Error(), "ovs.vlan=10") {
			t.Fatalf("error %v, want a refusal naming ovs.vlan=10", err)
		}
	})
	t.Run("shared bridge outlives its first network", func(t *testing.T) {
		for _, s := range []*sandbox{a1, a2} {
			if err := hs.d.Leave(ctx, na, s.ep, s.path); err != nil {
				t.Fatal(err)
			}
		}
		if err := hs.d.DeleteNetwork(ctx, na); err != nil {
			t.Fatal(err)
		}
		if b, _ := c.FindBridge(ctx, shared); b == nil {
			t.Fatal("shared bridge deleted while network B uses it")
		}
		if _, err := hs.h.LinkByName(na.BridgeName); err == nil {
			t.Errorf("gateway port %s of the deleted network left", na.BridgeName)
		}
		mustPing(t, b1.ns, "10.82.2.1")
		if err := hs.d.Leave(ctx, nb, b1.ep, b1.path); err != nil {
			t.Fatal(err)
		}
		if err := hs.d.DeleteNetwork(ctx, nb); err != nil {
			t.Fatal(err)
		}
		if b, _ := c.FindBridge(ctx, shared); b != nil {
			t.Errorf("shared bridge left after its last network: %+v", b)
		}
	})
}

// TestVSwitchdRestart: ovs-vswitchd killed and started again rebuilds the
// datapath from the database; the gateway keeps its address (the internal
// port's tap device persists), traffic resumes, and Repair finds nothing
// to repair.
func TestVSwitchdRestart(t *testing.T) {
	hs := newHost(t)
	n := hs.network(t, map[string]string{ovs.OptVLAN: "7"}, "10.83.0.0/24", "10.83.0.1", "", "")
	a := hs.join(t, n, "10.83.0.2/24", "")
	b := hs.join(t, n, "10.83.0.3/24", "")
	mustPing(t, a.ns, "10.83.0.3")
	mustPing(t, a.ns, "10.83.0.1")

	hs.restart()

	if !hs.hasAddr(t, n.BridgeName, "10.83.0.1/24") {
		t.Errorf("gateway address lost on %s", n.BridgeName)
	}
	mustPing(t, a.ns, "10.83.0.3")
	mustPing(t, b.ns, "10.83.0.1")
	for _, s := range []*sandbox{a, b} {
		if repaired, err := hs.d.Repair(ctx, n, s.ep, s.path, nil); err != nil || repaired {
			t.Errorf("Repair after the restart: %v %v", repaired, err)
		}
	}
	if err := hs.d.CreateNetwork(ctx, n); err != nil { // restore's call
		t.Fatal(err)
	}
	mustPing(t, a.ns, "10.83.0.1")
}

// TestRepair: a port removed from the database is put back in place (the
// pair untouched); a pair deleted is rebuilt.
func TestRepair(t *testing.T) {
	hs := newHost(t)
	c := hs.client(t)
	n := hs.network(t, nil, "10.84.0.0/24", "10.84.0.1", "", "")
	a := hs.join(t, n, "10.84.0.2/24", "")
	b := hs.join(t, n, "10.84.0.3/24", "")
	host := a.ep.HostIfName

	p, _ := c.FindPort(ctx, host)
	if err := c.DeletePort(ctx, p.UUID); err != nil {
		t.Fatal(err)
	}
	if err := c.Applied(ctx); err != nil {
		t.Fatal(err)
	}
	mustNotPing(t, a.ns, "10.84.0.3", "port deleted from the database")
	if repaired, err := hs.d.Repair(ctx, n, a.ep, a.path, nil); err != nil || !repaired {
		t.Fatalf("Repair: %v %v", repaired, err)
	}
	if a.ep.HostIfName != host {
		t.Errorf("host end rebuilt: %s, was %s", a.ep.HostIfName, host)
	}
	mustPing(t, a.ns, "10.84.0.3")
	mustTCP(t, a.path, b.path, "10.84.0.3")

	testutil.Must(t, "ip", "-n", hs.ns, "link", "del", b.ep.HostIfName)
	if repaired, err := hs.d.Repair(ctx, n, b.ep, b.path, nil); err != nil || !repaired {
		t.Fatalf("Repair of a deleted pair: %v %v", repaired, err)
	}
	mustPing(t, b.ns, "10.84.0.2")
	mustTCP(t, b.path, a.path, "10.84.0.2")
	if repaired, err := hs.d.Repair(ctx, n, b.ep, b.path, nil); err != nil || repaired {
		t.Errorf("second Repair: %v %v", repaired, err)
	}

	// A pair with checksum offload on (made before Tether turned it off):
	// TCP from it fails, Repair turns it off and says so.
	if err := tns.Do(a.path, func() error { return nlutil.SetTxChecksum(a.ep.IfName, true) }); err != nil {
		t.Fatal(err)
	}
	if err := tcpExchange(a.path, b.path, "10.84.0.3"); err == nil {
		t.Error("TCP got through with checksum offload on: the test cannot tell the fix")
	}
	if err := udpExchange(a.path, hs.path, "10.84.0.1"); err == nil {
		t.Error("UDP got through with checksum offload on: the test cannot tell the fix")
	}
	if repaired, err := hs.d.Repair(ctx, n, a.ep, a.path, nil); err != nil || !repaired {
		t.Fatalf("Repair of a pair with checksum offload on: %v %v", repaired, err)
	}
	mustTCP(t, a.path, b.path, "10.84.0.3")
	mustUDP(t, a.path, hs.path, "10.84.0.1")
	if repaired, err := hs.d.Repair(ctx, n, a.ep, a.path, nil); err != nil || repaired {
		t.Errorf("Repair after the offload fix: %v %v", repaired, err)
	}
}

// TestICCOff: with ICC off the ports are protected: sandboxes reach the
// gateway, not each other.
func TestICCOff(t *testing.T) {
	hs := newHost(t)
	n := hs.spec(nil, "10.85.0.0/24", "10.85.0.1", "", "")
	n.ICC = false
	if err := hs.d.CreateNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hs.d.DeleteNetwork(ctx, n) })
	a := hs.join(t, n, "10.85.0.2/24", "")
	hs.join(t, n, "10.85.0.3/24", "")
	mustPing(t, a.ns, "10.85.0.1")
	mustNotPing(t, a.ns, "10.85.0.3", "protected ports exchanged frames")
}

// TestSweep: ports and bridges no record names are removed, with the
// veth pairs; what keep names stays.
func TestSweep(t *testing.T) {
	hs := newHost(t)
	c := hs.client(t)
	n := hs.network(t, nil, "10.86.0.0/24", "10.86.0.1", "", "")
	a := hs.join(t, n, "10.86.0.2/24", "")
	b := hs.join(t, n, "10.86.0.3/24", "")
	keep := map[string]string{n.ID: n.BridgeName, a.ep.ID: a.ep.HostIfName}
	got, err := hs.d.Sweep(ctx, keep)
	if err != nil || got != 1 {
		t.Fatalf("Sweep: %d %v, want 1 (b's port)", got, err)
	}
	if p, _ := c.FindPort(ctx, b.ep.HostIfName); p != nil {
		t.Error("b's port kept")
	}
	if _, err := hs.h.LinkByName(b.ep.HostIfName); err == nil {
		t.Error("b's host end kept")
	}
	mustPing(t, a.ns, "10.86.0.1")
	if got, err := hs.d.Sweep(ctx, map[string]string{}); err != nil || got != 3 {
		t.Fatalf("Sweep of everything: %d %v, want 3 (two ports, the bridge)", got, err)
	}
	if br, _ := c.FindBridge(ctx, n.BridgeName); br != nil {
		t.Errorf("bridge of a network without a record kept: %+v", br)
	}
}

// TestFirewallSeesGateway: the gateway interface (an internal port: a tap
// device of ovs-vswitchd) is what nftables' iifname and oifname match, as
// the engine's firewall expects of a network's BridgeName: traffic routed
// between two OVS networks is counted by iifname A oifname B, and a drop
// rule on that pair (the engine's "no traffic between networks") stops it.
func TestFirewallSeesGateway(t *testing.T) {
	hs := newHost(t)
	na := hs.network(t, nil, "10.87.1.0/24", "10.87.1.1", "", "")
	nb := hs.network(t, nil, "10.87.2.0/24", "10.87.2.1", "", "")
	a := hs.join(t, na, "10.87.1.2/24", "")
	b := hs.join(t, nb, "10.87.2.2/24", "")
	testutil.Must(t, "ip", "netns", "exec", hs.ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	rules := `table inet ttest {
	chain forward { type filter hook forward priority 0; policy accept;
		iifname "` + na.BridgeName + `" oifname "` + nb.BridgeName + `" counter; }
	chain input { type filter hook input priority 0; policy accept;
		iifname "` + na.BridgeName + `" icmp type echo-request counter;
		iifname != { "` + na.BridgeName + `", "` + nb.BridgeName + `", "lo" } counter; }
}`
	nft := func(args ...string) string {
		return testutil.Must(t, "ip", append([]string{"netns", "exec", hs.ns, "nft"}, args...)...)
	}
	f, err := os.CreateTemp(t.TempDir(), "rules")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(rules)
	f.Close()
	nft("-f", f.Name())
	mustPing(t, a.ns, "10.87.1.1")
	mustPing(t, a.ns, "10.87.2.2")
	mustTCP(t, a.path, b.path, "10.87.2.2") // routed through both gateways
	out := nft("list", "table", "inet", "ttest")
	var counts []string
	for line := range strings.Lines(out) {
		if i := strings.Index(line, "counter packets "); i >= 0 {
			counts = append(counts, strings.Fields(line[i:])[2])
		}
	}
	// forward A->B, input from A, input from anything else (a host end).
	if len(counts) != 3 || counts[0] == "0" || counts[1] == "0" || counts[2] != "0" {
		t.Errorf("counters %v, want forward and gateway input counted, nothing from elsewhere:\n%s", counts, out)
	}
	nft("add", "rule", "inet", "ttest", "forward", "iifname", na.BridgeName, "oifname", nb.BridgeName, "drop")
	mustNotPing(t, a.ns, "10.87.2.2", "the drop rule on the gateway interfaces did not apply")
}
