package etcd

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/bolt"
)

// The cost of the store's share of cluster-wide operations, etcd against
// bolt on the same machine and disk. "etcd" is one embedded member (fsync on
// every raft commit, gRPC over loopback); "etcd3" is a three-member cluster
// of processes on the same disk (the leader waits for a follower's fsync
// too). A real cluster adds the network round trip to its followers.
//
//	go test -run '^$' -bench . ./internal/store/etcd/
//
// Parallel variants run 16 claimers at once: etcd commits concurrent
// proposals together (one fsync for many), bolt serialises its commits.

// benchStores runs fn against a fresh bolt file, a key space of an embedded
// etcd and one of a three-member cluster.
func benchStores(b *testing.B, fn func(b *testing.B, s store.Store)) {
	srv := startEmbedded(b, embedOptions{})
	cluster := startCluster(b, etcd37(b), clusterOptions{size: 3})
	b.Run("bolt", func(b *testing.B) {
		s, err := bolt.Open(filepath.Join(b.TempDir(), "store.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		fn(b, s)
	})
	b.Run("etcd", func(b *testing.B) {
		s, err := Open(b.Context(), srv.config(uniquePrefix()))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		fn(b, s)
	})
	b.Run("etcd3", func(b *testing.B) {
		s, err := Open(b.Context(), cluster.config(uniquePrefix()))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		fn(b, s)
	})
}

var benchValue = []byte(strings.Repeat("x", 256))

// BenchmarkTxn: one attach's records in one transaction, as bolt's
// BenchmarkTxn: the endpoint must not exist; endpoint, address claim and
// sandbox record are written together.
func BenchmarkTxn(b *testing.B) {
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		i := 0
		for b.Loop() {
			id := fmt.Sprintf("%08d", i)
			i++
			ops := []store.Op{
				store.Put("tether/v1/endpoint/"+id, benchValue),
				store.Put("tether/v1/ipam/10.0.0.0-16/"+id, benchValue),
				store.Put("tether/v1/sandbox/"+id, benchValue),
			}
			if _, err := s.Txn(ctx, []store.Cmp{store.Absent("tether/v1/endpoint/" + id)}, ops); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCreate: one address claim, a Create of a key nobody holds.
func BenchmarkCreate(b *testing.B) {
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		i := 0
		for b.Loop() {
			if _, err := s.Create(ctx, fmt.Sprintf("tether/v1/ipam/10.0.0.0-8/%08d", i), benchValue, store.NoLease); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// BenchmarkCreateParallel: 16 hosts' worth of claimers at once.
func BenchmarkCreateParallel(b *testing.B) {
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		var n atomic.Int64
		b.SetParallelism(8) // x GOMAXPROCS (2 here) = 16 goroutines
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				key := fmt.Sprintf("tether/v1/ipam/10.0.0.0-8/%08d", n.Add(1))
				if _, err := s.Create(ctx, key, benchValue, store.NoLease); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkGet: reading one record (linearizable in etcd: a quorum read).
func BenchmarkGet(b *testing.B) {
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		if _, err := s.Put(ctx, "tether/v1/network/x", benchValue, store.NoLease); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := s.Get(ctx, "tether/v1/network/x"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkKeepAlive: one lease renewal on the store's kept stream
// (KeepAlive) against clientv3's KeepAliveOnce, which opens a stream per
// renewal, on an embedded etcd (client and server in this process: the
// reported CPU per renewal is both sides').
func BenchmarkKeepAlive(b *testing.B) {
	srv := startEmbedded(b, embedOptions{})
	s, err := Open(b.Context(), srv.config(uniquePrefix()))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	id, err := s.Grant(b.Context(), time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		renew func(ctx context.Context) error
	}{
		{"stream", func(ctx context.Context) error { return s.KeepAlive(ctx, id) }},
		{"once", func(ctx context.Context) error {
			_, err := s.client.KeepAliveOnce(ctx, clientv3.LeaseID(id))
			return err
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			cpu0 := processCPU()
			for b.Loop() {
				if err := c.renew(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
		})
	}
}

func processCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
