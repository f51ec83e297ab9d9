package link_test

// Kernel tests: links between namespaces the test creates (named, so `ip -n`
// inspects and breaks them), with no other interface than loopback. The
// namespaces are left with IPv6 on by default, as adopted namespaces are, so
// the tests see the Linker turn it off. Traffic is real (ping, and a TCP
// connection made from Go inside the namespaces). As root they run; under
// TETHER_E2E=1 without root they fail.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/link"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

var ctx = context.Background()

// sb is a test namespace standing for a sandbox.
type sb struct{ name, path string }

// newNS creates a named namespace with loopback up; the test's end deletes
// it unless the test did (tns.Delete is idempotent).
func newNS(t *testing.T) sb {
	t.Helper()
	testutil.RequireRoot(t)
	name := "tth-p2p-" + testutil.Suffix()
	testutil.Must(t, "ip", "netns", "add", name)
	s := sb{name: name, path: "/run/netns/" + name}
	t.Cleanup(func() {
		if err := tns.Delete(s.path); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	testutil.Must(t, "ip", "-n", name, "link", "set", "lo", "up")
	return s
}

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newLink records a link between a and b (not created yet).
func newLink(a, b sb, ifA, ifB, addrA, addrB string) *driver.P2PLink {
	return &driver.P2PLink{ID: newID(), NSA: a.path, NSB: b.path, IfA: ifA, IfB: ifB,
		AddrA: netip.MustParsePrefix(addrA + "/32"), AddrB: netip.MustParsePrefix(addrB + "/32")}
}

// create makes the link and deletes it at the test's end.
func create(t *testing.T, k *link.Linker, l *driver.P2PLink) {
	t.Helper()
	if err := k.CreateLink(ctx, l); err != nil {
		t.Fatalf("create link: %v", err)
	}
	t.Cleanup(func() {
		if err := k.DeleteLink(ctx, l); err != nil {
			t.Errorf("delete link: %v", err)
		}
	})
}

func intact(t *testing.T, k *link.Linker, l *driver.P2PLink) bool {
	t.Helper()
	ok, err := k.LinkIntact(ctx, l)
	if err != nil {
		t.Fatalf("LinkIntact: %v", err)
	}
	return ok
}

// mustPing fails unless a ping from s to addr gets through (three tries:
// the first may wait for neighbour resolution).
func mustPing(t *testing.T, s sb, addr netip.Addr) {
	t.Helper()
	var out string
	var err error
	for range 3 {
		if out, err = testutil.InNS(s.name, "ping", "-n", "-q", "-c", "1", "-W", "1", addr.String()); err == nil {
			return
		}
	}
	t.Errorf("ping %s from %s: %v\n%s", addr, s.name, err, out)
}

// mustTCP connects from a to a listener of b on addr and sends a line
// back, all from Go with sockets opened inside the namespaces.
func mustTCP(t *testing.T, a, b sb, addr netip.Addr) {
	t.Helper()
	var ln net.Listener
	err := tns.Do(b.path, func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(addr.String(), "0"))
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", b.name, err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "hello over the link\n")
	}()
	var c net.Conn
	err = tns.Do(a.path, func() (err error) {
		c, err = net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("connect from %s to %s: %v", a.name, ln.Addr(), err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello over the link\n" {
		t.Errorf("read from %s: %q, %v", ln.Addr(), got, err)
	}
}

func ipOut(t *testing.T, s sb, args ...string) string {
	t.Helper()
	return testutil.Must(t, "ip", append([]string{"-n", s.name}, args...)...)
}

// linksOf lists s's interfaces, one per line, from stdout only: iproute2
// prints "Peer netns reference is invalid" on stderr when another test's
// namespace goes away while it names a veth peer's namespace, and that
// line is not a change of s's links.
func linksOf(t *testing.T, s sb) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", s.name, "-o", "link").Output()
	if err != nil {
		t.Fatalf("ip -n %s -o link: %v", s.name, err)
	}
	// Carrier and operational state follow a peer's state a moment late
	// (the kernel's link watch): what the listing compares is which links
	// exist and how they are set, not that.
	return linkState.ReplaceAllString(string(out), "")
}

// linkState matches the parts of `ip -o link` that the kernel changes on
// its own after a peer goes up or down.
var linkState = regexp.MustCompile(`NO-CARRIER,|,LOWER_UP| state [A-Z]+`)

// ifIndex is the interface's index in s, 0 when it does not exist.
func ifIndex(t *testing.T, s sb, name string) int {
	t.Helper()
	// stdout only: iproute2 may print "Peer netns reference is invalid" on
	// stderr while it names a veth peer's namespace that is going away.
	out, err := exec.Command("ip", "-n", s.name, "-o", "link", "show", "dev", name).Output()
	if err != nil {
		return 0
	}
	i, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(out), ":", 2)[0]))
	if err != nil {
		t.Fatalf("index of %s in %s: %q", name, s.name, out)
	}
	return i
}

// checkEnd: the end has exactly its /32, IPv6 off and no IPv6 address,
// the marker, the MTU, is up, and the host route to the peer.
func checkEnd(t *testing.T, s sb, name string, addr, peer netip.Prefix, l *driver.P2PLink, mtu int) {
	t.Helper()
	if got := strings.Fields(ipOut(t, s, "-o", "-4", "addr", "show", "dev", name)); len(got) < 4 || got[3] != addr.String() {
		t.Errorf("%s in %s: IPv4 addresses %v, want %s", name, s.name, got, addr)
	}
	if got := strings.TrimSpace(ipOut(t, s, "-6", "addr", "show", "dev", name)); got != "" {
		t.Errorf("%s in %s has IPv6 addresses:\n%s", name, s.name, got)
	}
	if got, _ := testutil.InNS(s.name, "cat", "/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6"); strings.TrimSpace(got) != "1" {
		t.Errorf("%s in %s: disable_ipv6 = %q, want 1", name, s.name, got)
	}
	show := ipOut(t, s, "-d", "link", "show", "dev", name)
	for _, want := range []string{"veth", "alias " + driver.LinkMarker(l.ID), "mtu " + strconv.Itoa(mtu) + " ", ",UP"} {
		if !strings.Contains(show, want) {
			t.Errorf("%s in %s: no %q in\n%s", name, s.name, want, show)
		}
	}
	want := peer.Addr().String() + " dev " + name + " scope link"
	if got := ipOut(t, s, "-4", "route", "show", "dev", name); !strings.Contains(got, peer.Addr().String()+" scope link") {
		t.Errorf("%s: no route %q in\n%s", s.name, want, got)
	}
}

// TestLinkTwoNamespaces: two namespaces with nothing but loopback talk
// over a link (ping both ways, TCP); the ends are as documented; delete
// removes both and is idempotent.
func TestLinkTwoNamespaces(t *testing.T) {
	for _, mtu := range []int{0, 9000} {
		t.Run("mtu"+strconv.Itoa(mtu), func(t *testing.T) {
			a, b := newNS(t), newNS(t)
			k := link.New()
			l := newLink(a, b, "p2p0", "p2p7", "10.1.1.0", "10.1.1.1")
			l.MTU = mtu
			create(t, k, l)
			want := mtu
			if want == 0 {
				want = link.DefaultMTU
			}
			checkEnd(t, a, "p2p0", l.AddrA, l.AddrB, l, want)
			checkEnd(t, b, "p2p7", l.AddrB, l.AddrA, l, want)
			if !intact(t, k, l) {
				t.Error("new link not intact")
			}
			mustPing(t, a, l.AddrB.Addr())
			mustPing(t, b, l.AddrA.Addr())
			mustTCP(t, a, b, l.AddrB.Addr())
			mustTCP(t, b, a, l.AddrA.Addr())

			if err := k.DeleteLink(ctx, l); err != nil {
				t.Fatalf("delete: %v", err)
			}
			if ifIndex(t, a, "p2p0") != 0 || ifIndex(t, b, "p2p7") != 0 {
				t.Error("an end is left after DeleteLink")
			}
			if intact(t, k, l) {
				t.Error("deleted link intact")
			}
			if err := k.DeleteLink(ctx, l); err != nil {
				t.Errorf("delete again: %v", err)
			}
		})
	}
}

// TestTriangle: three namespaces joined by three links route to each
// other's addresses on each link by the host routes alone.
func TestTriangle(t *testing.T) {
	a, b, c := newNS(t), newNS(t), newNS(t)
	k := link.New()
	ab := newLink(a, b, "p2p0", "p2p0", "10.1.1.0", "10.1.1.1")
	bc := newLink(b, c, "p2p1", "p2p0", "10.1.1.2", "10.1.1.3")
	ac := newLink(a, c, "p2p1", "p2p1", "10.1.1.4", "10.1.1.5")
	for _, l := range []*driver.P2PLink{ab, bc, ac} {
		create(t, k, l)
	}
	for _, l := range []*driver.P2PLink{ab, bc, ac} {
		if !intact(t, k, l) {
			t.Errorf("link %s-%s not intact", l.IfA, l.IfB)
		}
	}
	mustPing(t, a, ac.AddrB.Addr()) // A reaches C over the A-C link
	mustPing(t, c, ac.AddrA.Addr())
	mustPing(t, a, ab.AddrB.Addr())
	mustPing(t, b, bc.AddrB.Addr())
	mustPing(t, c, bc.AddrA.Addr())
	mustTCP(t, a, c, ac.AddrB.Addr())
	// Deleting one link leaves the others as they were.
	if err := k.DeleteLink(ctx, ab); err != nil {
		t.Fatal(err)
	}
	if !intact(t, k, ac) || !intact(t, k, bc) {
		t.Error("deleting A-B broke another link")
	}
	mustPing(t, a, ac.AddrB.Addr())
}

// TestCreateIdempotent: CreateLink on an intact link changes nothing (the
// ends keep their indexes, the link stays intact).
func TestCreateIdempotent(t *testing.T) {
	a, b := newNS(t), newNS(t)
	k := link.New()
	l := newLink(a, b, "p2p0", "p2p1", "10.1.1.0", "10.1.1.1")
	create(t, k, l)
	ia, ib := ifIndex(t, a, "p2p0"), ifIndex(t, b, "p2p1")
	for range 2 {
		if err := k.CreateLink(ctx, l); err != nil {
			t.Fatalf("create again: %v", err)
		}
	}
	if ifIndex(t, a, "p2p0") != ia || ifIndex(t, b, "p2p1") != ib {
		t.Error("CreateLink on an intact link rebuilt it")
	}
	if !intact(t, k, l) {
		t.Error("not intact")
	}
	mustPing(t, a, l.AddrB.Addr())
}

// TestRepair: a link broken in one way is not intact, and CreateLink
// makes it intact again: in place when the pair survived (same indexes),
// by a new pair when it did not.
func TestRepair(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIt func(t *testing.T, a, b sb, l *driver.P2PLink)
		inPlace bool
	}{
		{"route in A", func(t *testing.T, a, b sb, l *driver.P2PLink) {
			ipOut(t, a, "route", "del", l.AddrB.Addr().String()+"/32", "dev", l.IfA)
		}, true},
		{"address in B", func(t *testing.T, a, b sb, l *driver.P2PLink) {
			ipOut(t, b, "addr", "del", l.AddrB.String(), "dev", l.IfB)
		}, true},
		{"end in B down", func(t *testing.T, a, b sb, l *driver.P2PLink) {
			ipOut(t, b, "link", "set", l.IfB, "down")
		}, true},
		{"MTU in A", func(t *testing.T, a, b sb, l *driver.P2PLink) {
			ipOut(t, a, "link", "set", l.IfA, "mtu", "1400")
		}, true},
		{"end in A deleted", func(t *testing.T, a, b sb, l *driver.P2PLink) {
			ipOut(t, a, "link", "del", l.IfA)
		}, false},
		{"end in B renamed", func(t *testing.T, a, b sb, l *driver.P2PLink) {
			ipOut(t, b, "link", "set", l.IfB, "down")
			ipOut(t, b, "link", "set", l.IfB, "name", "other0")
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newNS(t), newNS(t)
			k := link.New()
			l := newLink(a, b, "p2p0", "p2p1", "10.1.1.0", "10.1.1.1")
			create(t, k, l)
			ia, ib := ifIndex(t, a, "p2p0"), ifIndex(t, b, "p2p1")
			tc.breakIt(t, a, b, l)
			if intact(t, k, l) {
				t.Fatal("broken link reported intact")
			}
			if err := k.CreateLink(ctx, l); err != nil {
				t.Fatalf("repair: %v", err)
			}
			if !intact(t, k, l) {
				t.Fatal("not intact after CreateLink")
			}
			sameIdx := ifIndex(t, a, "p2p0") == ia && ifIndex(t, b, "p2p1") == ib
			if sameIdx != tc.inPlace {
				t.Errorf("ends kept their indexes: %v, want %v", sameIdx, tc.inPlace)
			}
			if ifIndex(t, b, "other0") != 0 {
				t.Error("the renamed old end is left")
			}
			checkEnd(t, a, "p2p0", l.AddrA, l.AddrB, l, link.DefaultMTU)
			checkEnd(t, b, "p2p1", l.AddrB, l.AddrA, l, link.DefaultMTU)
			mustPing(t, a, l.AddrB.Addr())
		})
	}
}

// TestNameInUse: a name taken in either namespace by an interface that is
// not the link's (another link's, or not Tether's) is refused, and
// nothing is left behind.
func TestNameInUse(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, k *link.Linker, a, b sb)
	}{
		// An unmarked veth: the kind of link a p2p end is, not Tether's.
		{"veth in B", func(t *testing.T, k *link.Linker, a, b sb) {
			ipOut(t, b, "link", "add", "p2p1", "type", "veth", "peer", "name", "x0")
		}},
		{"veth in A", func(t *testing.T, k *link.Linker, a, b sb) {
			ipOut(t, a, "link", "add", "p2p0", "type", "veth", "peer", "name", "x0")
		}},
		{"another link in A", func(t *testing.T, k *link.Linker, a, b sb) {
			c := newNS(t)
			create(t, k, newLink(a, c, "p2p0", "p2p0", "10.2.0.0", "10.2.0.1"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newNS(t), newNS(t)
			k := link.New()
			tc.setup(t, k, a, b)
			before := [2]string{linksOf(t, a), linksOf(t, b)}
			l := newLink(a, b, "p2p0", "p2p1", "10.1.1.0", "10.1.1.1")
			err := k.CreateLink(ctx, l)
			if !errors.Is(err, link.ErrNameInUse) {
				t.Fatalf("CreateLink = %v, want ErrNameInUse", err)
			}
			t.Log(err)
			if after := [2]string{linksOf(t, a), linksOf(t, b)}; after != before {
				t.Errorf("links changed by a refused CreateLink:\n%v\n%v", before, after)
			}
			if intact(t, k, l) {
				t.Error("refused link intact")
			}
		})
	}
}

// TestDeleteNamespaceGone: DeleteLink succeeds when one namespace (or
// both) is gone, and removes the end left in the other.
func TestDeleteNamespaceGone(t *testing.T) {
	for _, gone := range []string{"A", "B", "both"} {
		t.Run(gone, func(t *testing.T) {
			a, b := newNS(t), newNS(t)
			k := link.New()
			l := newLink(a, b, "p2p0", "p2p1", "10.1.1.0", "10.1.1.1")
			if err := k.CreateLink(ctx, l); err != nil {
				t.Fatal(err)
			}
			if gone != "B" {
				testutil.Must(t, "ip", "netns", "del", a.name)
			}
			if gone != "A" {
				testutil.Must(t, "ip", "netns", "del", b.name)
			}
			if ok, err := k.LinkIntact(ctx, l); ok || err != nil {
				t.Errorf("LinkIntact with a namespace gone = %v, %v; want false, nil", ok, err)
			}
			if err := k.DeleteLink(ctx, l); err != nil {
				t.Fatalf("delete: %v", err)
			}
			// The namespace's teardown deletes its end in the background;
			// the survivor's end must be gone when DeleteLink returns.
			if gone == "A" && ifIndex(t, b, "p2p1") != 0 {
				t.Error("end in B left")
			}
			if gone == "B" && ifIndex(t, a, "p2p0") != 0 {
				t.Error("end in A left")
			}
			if err := k.CreateLink(ctx, l); !errors.Is(err, link.ErrNoNamespace) {
				t.Errorf("CreateLink with a namespace gone = %v, want ErrNoNamespace", err)
			}
		})
	}
}

// TestCreateRollback: a CreateLink that fails after making a new pair
// deletes it; one that fails while completing an existing pair leaves the
// pair in place (a later CreateLink completes it).
func TestCreateRollback(t *testing.T) {
	fault := errors.New("injected fault")
	t.Run("new pair", func(t *testing.T) {
		a, b := newNS(t), newNS(t)
		k := link.New()
		l := newLink(a, b, "p2p0", "p2p1", "10.1.1.0", "10.1.1.1")
		restore := link.FailBetweenEnds(fault)
		err := k.CreateLink(ctx, l)
		restore()
		if !errors.Is(err, fault) {
			t.Fatalf("CreateLink = %v, want the injected fault", err)
		}
		if ifIndex(t, a, "p2p0") != 0 || ifIndex(t, b, "p2p1") != 0 {
			t.Error("the new pair is left after a failed CreateLink")
		}
	})
	t.Run("existing pair", func(t *testing.T) {
		a, b := newNS(t), newNS(t)
		k := link.New()
		l := newLink(a, b, "p2p0", "p2p1", "10.1.1.0", "10.1.1.1")
		create(t, k, l)
		ia := ifIndex(t, a, "p2p0")
		ipOut(t, b, "addr", "del", l.AddrB.String(), "dev", l.IfB)
		restore := link.FailBetweenEnds(fault)
		err := k.CreateLink(ctx, l)
		restore()
		if !errors.Is(err, fault) {
			t.Fatalf("CreateLink = %v, want the injected fault", err)
		}
		if ifIndex(t, a, "p2p0") != ia {
			t.Fatal("a failed completion deleted the existing pair")
		}
		if err := k.CreateLink(ctx, l); err != nil || !intact(t, k, l) {
			t.Errorf("completion after the fault: %v", err)
		}
	})
}
