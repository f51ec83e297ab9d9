package zk

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/storetest"
	"github.com/tether-net/tether/internal/testutil"
)

// The conformance suite against a real ZooKeeper 3.8 (tickTime 100ms, so
// sessions as short as the suite's 200ms leases are granted as asked: no
// MinLeaseTTL stretching).
func TestConformance(t *testing.T) {
	z := startServer(t)
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, z) })
}

// A lease ends within its TTL: while its Store lives, ttl after Grant (the
// Store's own deadline, not the session's pings); when the Store vanishes
// without a goodbye (a dead host), when the server expires the session,
// within the TTL and one tick after the last ping. Either way the keys go
// in one logged write another watcher sees.
func TestLeaseExpiryTiming(t *testing.T) {
	z := startServer(t)
	const ttl = time.Second
	for _, tc := range []struct {
		name  string
		start func(t *testing.T, owner *Store) // after Grant and Put
		min   time.Duration                    // earliest end after start
	}{
		{"deadline", func(*testing.T, *Store) {}, ttl},
		{"owner gone", func(_ *testing.T, owner *Store) { owner.Close() }, ttl * 2 / 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := uniquePrefix()
			owner, watcher := mustOpen(t, config(z, prefix)), mustOpen(t, config(z, prefix))
			ctx := t.Context()
			ch, err := watcher.Watch(ctx, "l/", 0)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			id, err := owner.Grant(ctx, ttl)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"l/1", "l/2"} {
				if _, err := owner.Put(ctx, k, []byte("v"), id); err != nil {
					t.Fatal(err)
				}
			}
			if tc.name != "deadline" {
				start = time.Now()
			}
			tc.start(t, owner)
			var revs []int64
			for len(revs) < 4 {
				select {
				case ev := <-ch:
					revs = append(revs, ev.KV.Revision)
					if ev.Type == store.EventPut {
						continue
					}
					took := time.Since(start)
					t.Logf("%s deleted %v after %s", ev.KV.Key, took.Round(time.Millisecond), map[bool]string{true: "Grant", false: "the owner vanished"}[tc.name == "deadline"])
					if limit := ttl + 2*testutil.ZooKeeperTick + 300*time.Millisecond; took > limit || took < tc.min {
						t.Errorf("lease of %v ended after %v, want %v..%v", ttl, took, tc.min, limit)
					}
				case <-time.After(5 * ttl):
					t.Fatalf("events %v; the lease did not end within %v", revs, 5*ttl)
				}
			}
			if revs[2] != revs[3] {
				t.Errorf("the lease's keys were deleted at revisions %d and %d, want one write", revs[2], revs[3])
			}
			if err := watcher.KeepAlive(ctx, id); !errors.Is(err, store.ErrLeaseNotFound) {
				t.Errorf("KeepAlive after expiry: %v, want ErrLeaseNotFound", err)
			}
		})
	}
}

// Two stores on one root: each sees the other's writes, leases and
// compare-and-swaps race correctly across them (rev's version decides).
func TestTwoStores(t *testing.T) {
	z := startServer(t)
	prefix := uniquePrefix()
	a, b := mustOpen(t, config(z, prefix)), mustOpen(t, config(z, prefix))
	ctx := t.Context()
	ch, err := a.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	la, err := a.Grant(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.Grant(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// One Txn with keys on two leases, from a third party's point of view.
	rev, err := b.Txn(ctx, []store.Cmp{store.Absent("x"), store.Absent("y")},
		[]store.Op{store.PutLease("x", []byte("1"), la), store.PutLease("y", []byte("2"), lb), store.Put("counter", []byte("0"))})
	if err != nil {
		t.Fatal(err)
	}
	storetest.ExpectEvents(t, ch, fmt.Sprintf(`put "x"@%d`, rev), fmt.Sprintf(`put "y"@%d`, rev), fmt.Sprintf(`put "counter"@%d`, rev))
	var wg sync.WaitGroup
	for _, s := range []*Store{a, b, a, b} {
		wg.Go(func() {
			for range 20 {
				if err := increment(t, s); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if kv, err := b.Get(ctx, "counter"); err != nil || string(kv.Value) != "80" {
		t.Fatalf("counter = %+v, %v; want 80", kv, err)
	}
	if err := b.Revoke(ctx, la); err != nil { // any store may revoke any lease
		t.Fatalf("Revoke a's lease from b: %v", err)
	}
	if _, err := a.Get(ctx, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("x after its lease was revoked: %v", err)
	}
	if err := a.KeepAlive(ctx, la); !errors.Is(err, store.ErrLeaseNotFound) {
		t.Fatalf("KeepAlive of the revoked lease: %v", err)
	}
	if err := a.KeepAlive(ctx, lb); err == nil || errors.Is(err, store.ErrLeaseNotFound) {
		t.Fatalf("KeepAlive of b's lease through a: %v, want an error saying it is b's", err)
	}
	if kv, err := a.Get(ctx, "y"); err != nil || kv.Lease != lb {
		t.Fatalf("y = %+v, %v", kv, err)
	}
}

func increment(t *testing.T, s store.Store) error {
	for {
		kv, err := s.Get(t.Context(), "counter")
		if err != nil {
			return err
		}
		n, _ := strconv.Atoi(string(kv.Value))
		_, err = s.CompareAndSwap(t.Context(), "counter", []byte(strconv.Itoa(n+1)), kv.Revision, store.NoLease)
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
}

// The change log keeps History writes: replay from within works, from
// before fails with ErrCompacted; a watcher whose queue fills is dropped.
func TestHistory(t *testing.T) {
	z := startServer(t)
	cfg := config(z, uniquePrefix())
	cfg.History, cfg.WatchBuffer = 20, 4
	s := mustOpen(t, cfg)
	ctx := t.Context()
	var revs []int64
	for i := range 60 {
		revs = append(revs, storetest.PutRev(t, s, fmt.Sprintf("h/%02d", i)))
	}
	// Trims run in the background every History/10 writes.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := s.Watch(ctx, "h/", revs[0])
		if errors.Is(err, store.ErrCompacted) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Watch after the first of 60 writes with History 20: %v, want ErrCompacted", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ch, err := s.Watch(ctx, "h/", revs[56])
	if err != nil {
		t.Fatalf("Watch within the history: %v", err)
	}
	storetest.ExpectEvents(t, ch, fmt.Sprintf(`put "h/57"@%d`, revs[57]), fmt.Sprintf(`put "h/58"@%d`, revs[58]), fmt.Sprintf(`put "h/59"@%d`, revs[59]))

	full, err := s.Watch(ctx, "h/", revs[40]) // 19 events for a queue of 4
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let the queue overflow before reading
	n := 0
	timeout := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-full:
			if open {
				n++
			}
		case <-timeout:
			t.Fatal("a watcher 19 events behind with a queue of 4 was not dropped")
		}
	}
	if n != cfg.WatchBuffer {
		t.Fatalf("dropped watcher got %d events, want its queue (%d)", n, cfg.WatchBuffer)
	}
}

// Keys are opaque: any bytes work, List matches raw prefixes bytewise.
func TestKeyEscaping(t *testing.T) {
	z := startServer(t)
	s := open(t, z)
	ctx := t.Context()
	keys := []string{".", "..", ".x", "a/b", "a/b/", "a%2Fb", "a\x00b", "a b", "zookeeper", "über/ключ", "\xff\xfe", "/lead", "x/"}
	ch, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		rev, err := s.Put(ctx, k, []byte(k), store.NoLease)
		if err != nil {
			t.Fatalf("Put %q: %v", k, err)
		}
		storetest.ExpectEvents(t, ch, fmt.Sprintf(`put %q@%d`, k, rev))
		if kv, err := s.Get(ctx, k); err != nil || kv.Key != k || string(kv.Value) != k {
			t.Fatalf("Get %q = %+v, %v", k, kv, err)
		}
	}
	kvs, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, kv := range kvs {
		got = append(got, kv.Key)
	}
	want := slices.Clone(keys)
	slices.Sort(want)
	if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
		t.Fatalf("List = %q, want %q", got, want)
	}
	if kvs, err := s.List(ctx, "a/b"); err != nil || len(kvs) != 2 {
		t.Fatalf("List(a/b) = %v, %v; want a/b and a/b/", kvs, err)
	}
	for _, k := range keys {
		if n, ok := unescapeKey(escapeKey(k)); !ok || n != k {
			t.Errorf("escape round trip of %q: %q %v", k, n, ok)
		}
	}
}

// A Store decides its writes on what its own last writes left (no read
// round trip) only while no other Store wrote: a compare made stale by
// another Store's write is decided again on the server's state, both ways.
func TestWritesOnKnownState(t *testing.T) {
	z := startServer(t)
	cfg := config(z, uniquePrefix())
	a, b := mustOpen(t, cfg), mustOpen(t, cfg)
	ctx := t.Context()
	r1, err := a.Put(ctx, "k", []byte("1"), store.NoLease)
	if err != nil {
		t.Fatal(err)
	}
	if _, unknown, ok := a.fromKnown([]string{"k"}); !ok || len(unknown) > 0 {
		t.Fatal("a write left its key unknown")
	}
	r2, err := b.Put(ctx, "k", []byte("2"), store.NoLease)
	if err != nil {
		t.Fatal(err)
	}
	// a still holds k at r1: a compare at r2 must hold...
	if _, err := a.Txn(ctx, []store.Cmp{store.AtRevision("k", r2)}, []store.Op{store.Put("k", []byte("3"))}); err != nil {
		t.Errorf("compare at the current revision %d (a knew %d): %v", r2, r1, err)
	}
	// ...and, once b wrote again, one at a's own last revision fail
	r3, _, _ := a.fromKnown([]string{"k"})
	if _, err := b.Put(ctx, "k", []byte("4"), store.NoLease); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CompareAndSwap(ctx, "k", []byte("5"), r3["k"].Revision, store.NoLease); !errors.Is(err, store.ErrConflict) {
		t.Errorf("compare at a stale revision: %v, want a conflict", err)
	}
	if kv, _ := b.Get(ctx, "k"); string(kv.Value) != "4" {
		t.Errorf("k = %q, want 4", kv.Value)
	}
	// keys a never saw are guessed absent only where a creates them: a
	// put over b's key and a compare on it are decided on reads
	if _, err := b.Put(ctx, "bs", []byte("b"), store.NoLease); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(ctx, "mine", []byte("m"), store.NoLease); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(ctx, "bs", []byte("a"), store.NoLease); err != nil {
		t.Errorf("put over a key a never saw: %v", err)
	}
	if _, err := b.Put(ctx, "bs2", []byte("b"), store.NoLease); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(ctx, "mine", []byte("m2"), store.NoLease); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Txn(ctx, []store.Cmp{store.Absent("bs2")}, []store.Op{store.Put("x", []byte("x"))}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("compare absent on b's key a never saw: %v, want a conflict", err)
	}
	if err := a.Delete(ctx, "bs2"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "bs2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delete of a key a never saw: %v", err)
	}
}

// A lease whose ttl ran out here is not found by KeepAlive, whether or not
// the server has expired its session yet (the caller then grants anew).
func TestKeepAliveAfterLocalExpiry(t *testing.T) {
	s := open(t, startServer(t))
	ctx := t.Context()
	id, err := s.Grant(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	for range 2 { // the first call ends it, the second finds it ended
		if err := s.KeepAlive(ctx, id); !errors.Is(err, store.ErrLeaseNotFound) {
			t.Fatalf("keep-alive of a lease whose ttl ran out: %v, want lease not found", err)
		}
	}
}
