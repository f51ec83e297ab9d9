package bolt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return mustOpen(t, filepath.Join(t.TempDir(), "store.db"))
	})
}

func mustOpen(t *testing.T, path string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(path, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOpenCreatesPrivateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "store.db")
	mustOpen(t, path)
	for _, p := range []string{path, filepath.Dir(path), filepath.Dir(filepath.Dir(path))} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v, want no group or other access", p, fi.Mode())
		}
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	mustOpen(t, path)
	start := time.Now()
	s, err := Open(path, WithLockTimeout(200*time.Millisecond))
	if err == nil {
		s.Close()
		t.Fatal("second Open of the same file succeeded")
	}
	want := fmt.Sprintf("store %q is locked by another process", path)
	if !errors.Is(err, ErrLocked) || err.Error() != want {
		t.Fatalf("err = %q, want %q (wrapping ErrLocked)", err, want)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Open gave up after %v", d)
	}
}

func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Grant(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leasedRev, err := s.Put(ctx, "leased", []byte("l"), id)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := s.Put(ctx, "plain", []byte("p"), store.NoLease)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = mustOpen(t, path)
	for key, want := range map[string]store.KV{
		"leased": {Key: "leased", Value: []byte("l"), Revision: leasedRev, Lease: id},
		"plain":  {Key: "plain", Value: []byte("p"), Revision: rev},
	} {
		got, err := s.Get(ctx, key)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Get %q after reopen = %+v, %v; want %+v", key, got, err, want)
		}
	}
	if next, err := s.Put(ctx, "next", nil, store.NoLease); err != nil || next != rev+1 {
		t.Errorf("Put after reopen: revision %d, %v; want %d", next, err, rev+1)
	}
	if err := s.KeepAlive(ctx, id); err != nil {
		t.Errorf("KeepAlive after reopen: %v", err)
	}
	if id2, err := s.Grant(ctx, time.Hour); err != nil || id2 == id {
		t.Errorf("Grant after reopen = %d, %v; want a new ID (not %d)", id2, err, id)
	}
	if err := s.Revoke(ctx, id); err != nil {
		t.Errorf("Revoke after reopen: %v", err)
	}
	if _, err := s.Get(ctx, "leased"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get revoked key after reopen: %v, want ErrNotFound", err)
	}
}

// A lease that ran out while the daemon was down is expired by Open itself.
func TestOpenExpiresLeasesPastDeadline(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := Open(path, WithExpiryInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Grant(ctx, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "leased", nil, id); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the daemon is "down" past the deadline

	s = mustOpen(t, path, WithExpiryInterval(time.Hour))
	if _, err := s.Get(ctx, "leased"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get right after Open: err = %v, want ErrNotFound", err)
	}
	if err := s.KeepAlive(ctx, id); !errors.Is(err, store.ErrLeaseNotFound) {
		t.Fatalf("KeepAlive: err = %v, want ErrLeaseNotFound", err)
	}
}

func TestWatchCompacted(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "store.db")
	s := mustOpen(t, path, WithHistory(4))
	var revs []int64
	for i := range 6 {
		rev, err := s.Put(ctx, fmt.Sprintf("k/%d", i), nil, store.NoLease)
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, rev)
	}
	// The ring holds revs[2:]; replay must start at revs[1] or later.
	if _, err := s.Watch(ctx, "k/", revs[0]); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("Watch after %d: err = %v, want ErrCompacted", revs[0], err)
	}
	ch, err := s.Watch(ctx, "k/", revs[1])
	if err != nil {
		t.Fatalf("Watch after %d: %v", revs[1], err)
	}
	for _, want := range revs[2:] {
		if ev := <-ch; ev.KV.Revision != want {
			t.Fatalf("replayed revision %d, want %d", ev.KV.Revision, want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// History does not survive a restart: only "from now" is possible.
	s = mustOpen(t, path)
	if _, err := s.Watch(ctx, "k/", revs[4]); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("Watch after reopen: err = %v, want ErrCompacted", err)
	}
	if _, err := s.Watch(ctx, "k/", revs[5]); err != nil {
		t.Fatalf("Watch at the current revision after reopen: %v", err)
	}
}

// A watcher that stops reading is dropped; writers never wait for it.
func TestWatchOverflowClosesChannel(t *testing.T) {
	ctx := t.Context()
	s := mustOpen(t, filepath.Join(t.TempDir(), "store.db"), WithHistory(2), WithWatchBuffer(2))
	slow, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int)
	seen := make(chan struct{})
	go func() {
		n := 0
		for range fast {
			n++
			seen <- struct{}{}
		}
		done <- n
	}()
	for i := range 5 {
		if _, err := s.Put(ctx, fmt.Sprintf("k/%d", i), nil, store.NoLease); err != nil {
			t.Fatal(err)
		}
		<-seen // the reading watcher keeps up, whatever the machine's load
	}
	got := 0
	for range slow {
		got++
	}
	if got != 2 {
		t.Fatalf("slow watcher got %d events before its channel closed, want the 2 buffered", got)
	}
	s.Close()
	if n := <-done; n != 5 {
		t.Fatalf("reading watcher got %d events, want 5", n)
	}
}

func TestNoopWritesKeepRevision(t *testing.T) {
	ctx := t.Context()
	s := mustOpen(t, filepath.Join(t.TempDir(), "store.db"))
	rev, err := s.Put(ctx, "k", nil, store.NoLease)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "missing"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Txn(ctx, []store.Cmp{store.Absent("missing")}, []store.Op{store.Delete("missing")}); err != nil || got != rev {
		t.Fatalf("no-op Txn = %d, %v; want the unchanged revision %d", got, err, rev)
	}
	if _, err := s.Grant(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if next, err := s.Put(ctx, "k2", nil, store.NoLease); err != nil || next != rev+1 {
		t.Fatalf("next Put = %d, %v; want %d", next, err, rev+1)
	}
}

func TestTxnRejectsBadOps(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "store.db"))
	tests := map[string][]store.Op{
		"duplicate": {store.Put("a", nil), store.Delete("a")},
		"empty key": {store.Put("", nil)},
		"bad type":  {{Type: 99, Key: "a"}},
	}
	for name, ops := range tests {
		if _, err := s.Txn(t.Context(), nil, ops); err == nil {
			t.Errorf("%s: Txn succeeded", name)
		}
	}
	if kvs, _ := s.List(t.Context(), ""); len(kvs) != 0 {
		t.Fatalf("rejected Txns wrote %v", kvs)
	}
}

func TestClosed(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "store.db"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := context.Background()
	_, errGet := s.Get(ctx, "k")
	_, errPut := s.Put(ctx, "k", nil, store.NoLease)
	_, errWatch := s.Watch(ctx, "", 0)
	for name, err := range map[string]error{"Get": errGet, "Put": errPut, "Watch": errWatch} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", name, err)
		}
	}
}

func TestCorruptSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Put(metaSchema, encodeInt(99)) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := Open(path); err == nil || !strings.Contains(err.Error(), "schema version 99") {
		if err == nil {
			s.Close()
		}
		t.Fatalf("Open with schema 99: err = %v", err)
	}
}

// BenchmarkTxn is the store's share of one attach: a Txn of three puts
// (endpoint, address claim, sandbox record), one fsync'd commit.
func BenchmarkTxn(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "store.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	value := []byte(strings.Repeat("x", 256))
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("%08d", i)
		i++
		ops := []store.Op{
			store.Put("tether/v1/endpoint/"+id, value),
			store.Put("tether/v1/ipam/10.0.0.0-16/"+id, value),
			store.Put("tether/v1/sandbox/"+id, value),
		}
		if _, err := s.Txn(ctx, []store.Cmp{store.Absent("tether/v1/endpoint/" + id)}, ops); err != nil {
			b.Fatal(err)
		}
	}
}
