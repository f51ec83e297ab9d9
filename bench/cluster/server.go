package clustersim

import (
	"context"
	"log/slog"
	"time"

	"github.com/tether-net/tether/internal/store"
)

// Server is the cluster store's server the agents share (etcd or
// ZooKeeper), run by the harness in a namespace of its own.
type Server interface {
	// Name is the server and its version, for reports.
	Name() string
	// Open opens one agent's client, its keys under prefix.
	Open(ctx context.Context, prefix string, logger *slog.Logger) (store.Store, error)
	// CPU is the server process's user + system time, every incarnation
	// (Restart) summed.
	CPU() time.Duration
	// DBSize is the size of what the server keeps on disk, in bytes (etcd:
	// its bbolt file; ZooKeeper: the blocks its data directory uses).
	DBSize() int64
	// RSSKiB is the running server's resident memory (-1 while down).
	RSSKiB() int64
	// Restart kills the server, leaves it down for down, and starts it
	// again on the same data directory and port; it returns when it was
	// killed and when it answered again.
	Restart(down time.Duration) (killed, up time.Time, err error)
}
