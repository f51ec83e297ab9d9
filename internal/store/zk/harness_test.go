package zk

// The test harness: a ZooKeeper server (Debian's package) started by the
// test inside a network namespace of its own, listening on that
// namespace's loopback only; the client dials into the namespace. Each
// store opened on it gets its own root znode, so it starts empty.

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"

	"github.com/tether-net/tether/internal/testutil"
)

// startServer runs ZooKeeper in a fresh namespace; both are gone when tb
// ends. It needs root (skipped without, failed under TETHER_E2E=1).
func startServer(tb testing.TB) *testutil.ZooKeeper {
	tb.Helper()
	testutil.RequireRoot(tb)
	ns := testutil.NetNS(tb, "tth-zk")
	return testutil.StartZooKeeper(tb, testutil.Member{NS: ns, Addr: "127.0.0.1", Link: "lo"})
}

var prefixes atomic.Int64

// uniquePrefix gives each store opened on a shared server its own root.
func uniquePrefix() string { return fmt.Sprintf("test-%d", prefixes.Add(1)) }

// config is a client Config for the server, dialling inside its namespace.
func config(z *testutil.ZooKeeper, prefix string) Config {
	return Config{
		Servers: []string{z.Addr},
		Prefix:  prefix,
		DialContext: func(ctx context.Context, addr string) (net.Conn, error) {
			return testutil.DialInNS(ctx, z.NS, "tcp", addr)
		},
	}
}

// open opens a store with its own empty root; closed when tb ends.
func open(tb testing.TB, z *testutil.ZooKeeper) *Store {
	tb.Helper()
	return mustOpen(tb, config(z, uniquePrefix()))
}

func mustOpen(tb testing.TB, cfg Config) *Store {
	tb.Helper()
	s, err := Open(tb.Context(), cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}
