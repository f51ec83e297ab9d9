package zk

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/bolt"
)

// The cost of the store's share of cluster-wide operations, ZooKeeper
// against bolt on the same machine and disk (compare with the etcd
// package's benchmarks). "zk" is one standalone ZooKeeper 3.8 (fsync per
// group commit, TCP over the namespace's loopback). A write is a read of
// its keys plus one multi; writes of one Store are serialised, writes of
// several race on rev's version.
//
//	go test -run '^$' -bench . ./internal/store/zk/
func benchStores(b *testing.B, fn func(b *testing.B, s store.Store)) {
	z := startServer(b)
	b.Run("bolt", func(b *testing.B) {
		s, err := bolt.Open(filepath.Join(b.TempDir(), "store.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		fn(b, s)
	})
	b.Run("zk", func(b *testing.B) {
		s, err := Open(b.Context(), config(z, uniquePrefix()))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		fn(b, s)
	})
}

var benchValue = []byte(strings.Repeat("x", 256))

// BenchmarkTxn: one attach's records in one transaction: the endpoint must
// not exist; endpoint, address claim and sandbox record are written together.
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

// BenchmarkCreateParallel: 16 claimers at once through one Store.
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

// BenchmarkCreateTwoStores: 16 claimers split over two Stores (two hosts)
// on one root: their writes race on rev's version.
func BenchmarkCreateTwoStores(b *testing.B) {
	z := startServer(b)
	prefix := uniquePrefix()
	var stores [2]*Store
	for i := range stores {
		s, err := Open(b.Context(), config(z, prefix))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		stores[i] = s
	}
	ctx := context.Background()
	var n, g atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		s := stores[g.Add(1)%2]
		for pb.Next() {
			key := fmt.Sprintf("tether/v1/ipam/10.0.0.0-8/%08d", n.Add(1))
			if _, err := s.Create(ctx, key, benchValue, store.NoLease); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGet: reading one record.
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
