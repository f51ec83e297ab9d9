package overlay

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// storeWriter times one durable write to the cluster store from a host's
// namespace: the floor under an overlay attach, which answers only once its
// endpoint record is in the store (docs/overlay.md). The value is the size
// of an endpoint record; etcd and ZooKeeper both sync their log before they
// answer, as for Tether's own writes.
type storeWriter struct {
	put   func(ctx context.Context, i int) error
	close func()
}

// newStoreWriter connects to c's store from inside the namespace of host
// ns (an `ip netns` name): every connection is dialled there.
func newStoreWriter(tb testing.TB, c *testutil.Cluster, ns string) *storeWriter {
	tb.Helper()
	nsPath := "/run/netns/" + ns
	dial := func(ctx context.Context, addr string) (conn net.Conn, err error) {
		err = netns.Do(nsPath, func() error {
			var d net.Dialer
			conn, err = d.DialContext(ctx, "tcp", addr)
			return err
		})
		return conn, err
	}
	value := []byte(strings.Repeat("x", 320))
	if c.ZK != nil {
		conn, _, err := zk.Connect([]string{c.ZK.Addr}, 5*time.Second, zk.WithLogInfo(false),
			zk.WithDialer(func(network, addr string, timeout time.Duration) (net.Conn, error) {
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				return dial(ctx, addr)
			}))
		if err != nil {
			tb.Fatal(err)
		}
		const path = "/tether-bench-write"
		if _, err := conn.Create(path, value, 0, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
			conn.Close()
			tb.Fatalf("zookeeper create %s: %v", path, err)
		}
		return &storeWriter{
			put:   func(context.Context, int) error { _, err := conn.Set(path, value, -1); return err },
			close: conn.Close,
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Etcd.Addr}, DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)}})
	if err != nil {
		tb.Fatal(err)
	}
	return &storeWriter{
		put: func(ctx context.Context, i int) error {
			_, err := cli.Put(ctx, fmt.Sprintf("/tether-bench/write/%d", i), string(value))
			return err
		},
		close: func() { cli.Close() },
	}
}

// write times one write.
func (w *storeWriter) write(tb testing.TB, i int) time.Duration {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := w.put(ctx, i); err != nil {
		tb.Fatalf("store write %d: %v", i, err)
	}
	return time.Since(start)
}
