package daemon

import (
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/config"
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
