package daemon

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestOpenClusterWithoutStore(t *testing.T) {
	cl, closeFn, err := openCluster(t.Context(), &config.Config{}, quiet)
	if cl != nil || closeFn == nil || err != nil {
		t.Fatalf("openCluster without cluster-store = %v, close set %v, %v; want nil, a no-op close, nil", cl, closeFn != nil, err)
	}
	closeFn()
	if g, err := openVXLANGuard(&config.Config{IPTables: true}, cl); g != nil || err != nil {
		t.Errorf("openVXLANGuard without a cluster = %v, %v; want none", g, err)
	}
}

// A bad URL or option stops the start before any connection is tried;
// the checks are the backends' own (store.ParseURL under them).
func TestOpenClusterStoreParseOnly(t *testing.T) {
	for _, tc := range []struct {
		url  string
		opts map[string]string
		want string // "" = accepted
	}{
		{"etcd://127.0.0.1:2379", nil, ""},
		{"etcd://a,b:12379/tether", map[string]string{"kv.cacertfile": "/ca.pem", "discovery.ttl": "5"}, ""},
		{"zk://127.0.0.1", nil, ""},
		{"redis://h", nil, `cluster-store "redis://h": unknown scheme "redis"`},
		{"etcd://user@h", nil, `unexpected '@'`},
		{"zk://h/zookeeper", nil, "/zookeeper is ZooKeeper's own"},
		{"etcd://h", map[string]string{"kv.certfile": "/c.pem"}, "kv.certfile and kv.keyfile go together"},
		{"zk://h", map[string]string{"kv.cacertfile": "/ca.pem"}, "TLS is not supported for zk://"},
	} {
		cfg := &config.Config{ClusterStore: tc.url, ClusterStoreOpts: tc.opts}
		st, err := openClusterStore(t.Context(), cfg, true)
		if st != nil {
			t.Errorf("%s: parse only returned a store", tc.url)
		}
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s %v: err = %v, want %q", tc.url, tc.opts, err, tc.want)
		}
	}
}

// openCluster refuses a bad advertise address or store URL before it
// connects to anything.
func TestOpenClusterRefuses(t *testing.T) {
	for _, tc := range []struct{ store, advertise, want string }{
		{"etcd://127.0.0.1:2379", "127.0.0.1:2376", "cluster-advertise"},
		{"etcd://127.0.0.1:2379", "tth-none0:2376", `interface tth-none0`},
		{"etcd://h/a/../b", "198.18.0.1:2376", "empty, . or .. segment"},
	} {
		cfg := &config.Config{ClusterStore: tc.store, ClusterAdvertise: tc.advertise, DataRoot: t.TempDir()}
		if cl, _, err := openCluster(t.Context(), cfg, quiet); cl != nil || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s, %s: openCluster = %v, %v; want an error containing %q", tc.store, tc.advertise, cl, err, tc.want)
		}
	}
}

func TestClusterSelf(t *testing.T) {
	root := t.TempDir()
	cfg := &config.Config{ClusterAdvertise: "198.18.0.7:2376", DataRoot: root}
	n, err := clusterSelf(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n.Addr != netip.MustParseAddr("198.18.0.7") || n.Port != 2376 || len(n.ID) != 32 || n.StartedAt.IsZero() {
		t.Errorf("clusterSelf = %+v", n)
	}
	again, err := clusterSelf(cfg)
	if err != nil || again.ID != n.ID {
		t.Errorf("second start: ID %q, %v; want the same %q (a restart is the same node)", again.ID, err, n.ID)
	}
	// By interface: lo has 127.0.0.1 in any network namespace (read only).
	cfg.ClusterAdvertise = "lo:2376"
	if n, err := clusterSelf(cfg); err != nil || n.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("advertise lo: %+v, %v; want lo's 127.0.0.1", n, err)
	}
}

// nlAddr is an interface address as netlink.AddrList returns it.
func nlAddr(cidr string, flags int) netlink.Addr {
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return netlink.Addr{IPNet: n, Flags: flags}
}

func TestAdvertiseAddr(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addrs []netlink.Addr
		want  string // "" = none
	}{
		{"IPv4 only", []netlink.Addr{nlAddr("198.18.0.10/24", 0)}, "198.18.0.10"},
		{"IPv4 wins over an earlier IPv6", []netlink.Addr{nlAddr("2001:db8::10/64", 0), nlAddr("198.18.0.10/24", 0)}, "198.18.0.10"},
		{"IPv4 link-local skipped", []netlink.Addr{nlAddr("169.254.1.1/16", 0), nlAddr("2001:db8::10/64", 0)}, "2001:db8::10"},
		{"global IPv6 after link-local", []netlink.Addr{nlAddr("fe80::1/64", 0), nlAddr("2001:db8::10/64", 0)}, "2001:db8::10"},
		{"ULA is global scope", []netlink.Addr{nlAddr("fe80::1/64", 0), nlAddr("fd00:18::10/64", 0)}, "fd00:18::10"},
		{"first usable IPv6", []netlink.Addr{nlAddr("2001:db8::10/64", 0), nlAddr("2001:db8::11/64", 0)}, "2001:db8::10"},
		{"tentative skipped", []netlink.Addr{nlAddr("2001:db8::10/64", unix.IFA_F_TENTATIVE), nlAddr("2001:db8::11/64", 0)}, "2001:db8::11"},
		{"deprecated skipped", []netlink.Addr{nlAddr("2001:db8::10/64", unix.IFA_F_DEPRECATED), nlAddr("2001:db8::11/64", 0)}, "2001:db8::11"},
		{"temporary skipped", []netlink.Addr{nlAddr("2001:db8::10/64", unix.IFA_F_TEMPORARY), nlAddr("2001:db8::11/64", 0)}, "2001:db8::11"},
		{"DAD failed skipped", []netlink.Addr{nlAddr("2001:db8::10/64", unix.IFA_F_DADFAILED)}, ""},
		{"nodad and permanent are fine", []netlink.Addr{nlAddr("2001:db8::10/64", unix.IFA_F_NODAD|unix.IFA_F_PERMANENT)}, "2001:db8::10"},
		{"only link-local", []netlink.Addr{nlAddr("fe80::1/64", 0)}, ""},
		{"loopback IPv6 is not global", []netlink.Addr{nlAddr("::1/128", 0)}, ""},
		{"none", nil, ""},
		{"no prefix", []netlink.Addr{{}}, ""},
	} {
		got, ok := advertiseAddr(tc.addrs)
		if tc.want == "" && (ok || got.IsValid()) || tc.want != "" && (!ok || got != netip.MustParseAddr(tc.want)) {
			t.Errorf("%s: advertiseAddr = %v, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}

// TestClusterSelfIPv6Interface: cluster-advertise IFACE:PORT on an
// interface with only IPv6 addresses, in a namespace the test creates.
func TestClusterSelfIPv6Interface(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-adv")
	ip := func(args ...string) { t.Helper(); testutil.Must(t, "ip", append([]string{"-n", ns}, args...)...) }
	for _, l := range []string{"d6", "d6ll", "d6dep", "d4"} {
		ip("link", "add", l, "type", "veth", "peer", "name", l+"p")
		ip("link", "set", l, "up")
	}
	ip("addr", "add", "fe80::10/64", "dev", "d6ll", "nodad")
	ip("addr", "add", "2001:db8:18::10/64", "dev", "d6", "nodad")
	ip("addr", "add", "2001:db8:19::10/64", "dev", "d6dep", "nodad", "preferred_lft", "0")
	ip("addr", "add", "198.18.0.9/24", "dev", "d4")
	ip("addr", "add", "2001:db8:20::10/64", "dev", "d4", "nodad")
	cfg := &config.Config{DataRoot: t.TempDir()}
	for _, tc := range []struct{ iface, want, err string }{
		{"d6", "2001:db8:18::10", ""},
		{"d4", "198.18.0.9", ""},
		{"d6ll", "", "no IPv4 address and no global IPv6 address"}, // only a link-local address
		{"d6dep", "", "no IPv4 address and no global IPv6 address"},
	} {
		cfg.ClusterAdvertise = tc.iface + ":2376"
		var n cluster.Node
		err := netns.Do("/run/netns/"+ns, func() (err error) { n, err = clusterSelf(cfg); return err })
		if tc.err == "" && (err != nil || n.Addr != netip.MustParseAddr(tc.want) || n.Port != 2376) ||
			tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), cfg.ClusterAdvertise)) {
			t.Errorf("advertise %s: %+v, %v; want %q %q", cfg.ClusterAdvertise, n.Addr, err, tc.want, tc.err)
		}
	}
}

func TestNodeID(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "node-id")
	id, err := nodeID(path)
	if err != nil || len(id) != 32 {
		t.Fatalf("first nodeID = %q, %v", id, err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != id+"\n" {
		t.Fatalf("node-id file = %q, %v", b, err)
	}
	if again, err := nodeID(path); again != id || err != nil {
		t.Errorf("nodeID again = %q, %v; want %q", again, err, id)
	}
	if err := os.WriteFile(path, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if fresh, err := nodeID(path); err != nil || len(fresh) != 32 || fresh == id {
		t.Errorf("nodeID over a damaged file = %q, %v; want a new 32-digit ID", fresh, err)
	}
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := nodeID(filepath.Join(blocker, "node-id")); err == nil || !strings.Contains(err.Error(), "node id") {
		t.Errorf("nodeID under a file: err = %v, want a node id error", err)
	}
}
