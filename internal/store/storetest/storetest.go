// Package storetest is the conformance suite every store.Store must pass:
// the bbolt store today, etcd and ZooKeeper later. Run it from the
// backend's own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return openFresh(t) })
//	}
//
// open must return an empty store; Run closes it when the subtest ends.
// Lease tests use TTLs of a few hundred milliseconds, so the backend must
// expire leases within about a second of their deadline. A backend whose
// leases are coarser (etcd grants whole seconds, at least 1s) runs the suite
// with RunWith and Options.MinLeaseTTL: lease tests then stretch their TTLs,
// sleeps and waits by the same factor, so every assertion is unchanged.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/store"
)

// waitFor bounds every poll and every wait for an event.
const waitFor = 5 * time.Second

// shortestTTL is the shortest lease TTL the suite grants at scale 1.
const shortestTTL = 200 * time.Millisecond

// Options adapt the suite to a backend's granularity.
type Options struct {
	// MinLeaseTTL is the shortest lease the backend keeps for the TTL asked
	// (etcd: 1s, and the server may raise it further). Lease tests multiply
	// their TTLs, keep-alive periods and waits by MinLeaseTTL/200ms when that
	// is above 1. Zero keeps the default timing.
	MinLeaseTTL time.Duration
}

// leaseScale is the factor lease tests stretch their durations by.
func (o Options) leaseScale() time.Duration {
	if o.MinLeaseTTL <= shortestTTL {
		return 1
	}
	return (o.MinLeaseTTL + shortestTTL - 1) / shortestTTL
}

// Run runs the conformance suite; each subtest gets a fresh store from open.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	RunWith(t, open, Options{})
}

// RunWith is Run for a backend that needs Options.
func RunWith(t *testing.T, open func(t *testing.T) store.Store, o Options) {
	scale := o.leaseScale()
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store, closeStore func())
	}{
		{"GetPut", testGetPut},
		{"Create", testCreate},
		{"CompareAndSwap", testCompareAndSwap},
		{"Delete", testDelete},
		{"CompareAndDelete", testCompareAndDelete},
		{"TxnSuccess", testTxnSuccess},
		{"TxnConflict", testTxnConflict},
		{"ListPrefix", testListPrefix},
		{"RevisionMonotonic", testRevisionMonotonic},
		{"CancelledContext", testCancelledContext},
		{"WatchOrder", testWatchOrder},
		{"WatchReplay", testWatchReplay},
		{"WatchCancel", testWatchCancel},
		{"WatchClose", testWatchClose},
		{"LeaseExpiry", func(t *testing.T, s store.Store, _ func()) { testLeaseExpiry(t, s, scale) }},
		{"LeaseKeepAlive", func(t *testing.T, s store.Store, _ func()) { testLeaseKeepAlive(t, s, scale) }},
		{"LeaseRevoke", testLeaseRevoke},
		{"LeaseUnknown", testLeaseUnknown},
		{"ConcurrentCAS", testConcurrentCAS},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			var once sync.Once
			closeStore := func() {
				once.Do(func() {
					if err := s.Close(); err != nil {
						t.Errorf("Close: %v", err)
					}
				})
			}
			t.Cleanup(closeStore)
			tc.fn(t, s, closeStore)
		})
	}
}

func testGetPut(t *testing.T, s store.Store, _ func()) {
	ctx := t.Context()
	if _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get missing: err = %v, want ErrNotFound", err)
	}
	rev1 := mustPut(t, s, "k", "v1")
	expectKV(t, s, "k", "v1", rev1)
	rev2 := mustPut(t, s, "k", "v2")
	if rev2 <= rev1 {
		t.Fatalf("second Put revision %d, not above %d", rev2, rev1)
	}
	expectKV(t, s, "k", "v2", rev2)
	if _, err := s.Put(ctx, "empty", nil, store.NoLease); err != nil {
		t.Fatalf("Put nil value: %v", err)
	}
	if kv, err := s.Get(ctx, "empty"); err != nil || len(kv.Value) != 0 {
		t.Fatalf("Get empty = %+v, %v; want empty value", kv, err)
	}
}

func testCreate(t *testing.T, s store.Store, _ func()) {
	ctx := t.Context()
	rev, err := s.Create(ctx, "k", []byte("v1"), store.NoLease)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	expectKV(t, s, "k", "v1", rev)
	if _, err := s.Create(ctx, "k", []byte("v2"), store.NoLease); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second Create: err = %v, want ErrExists", err)
	}
	expectKV(t, s, "k", "v1", rev)
}

func testCompareAndSwap(t *testing.T, s store.Store, _ func()) {
	ctx := t.Context()
	rev := mustPut(t, s, "k", "v1")
	tests := []struct {
		name    string
		key     string
		prevRev int64
		wantErr error
	}{
		{"stale revision", "k", rev - 1, store.ErrConflict},
		{"future revision", "k", rev + 100, store.ErrConflict},
		{"missing key", "missing", rev, store.ErrNotFound},
		{"current revision", "k", rev, nil},
	}
	for _, tc := range tests {
		newRev, err := s.CompareAndSwap(ctx, tc.key, []byte(tc.name), tc.prevRev, store.NoLease)
		if !errors.Is(err, tc.wantErr) {
			t.Fatalf("%s: err = %v, want %v", tc.name, err, tc.wantErr)
		}
		if err == nil {
			expectKV(t, s, tc.key, tc.name, newRev)
		}
	}
	if _, err := s.Get(ctx, "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("failed CAS created the key: %v", err)
	}
}

func testDelete(t *testing.T, s store.Store, _ func()) {
	ctx := t.Context()
	mustPut(t, s, "k", "v")
	for i := range 2 { // the second delete finds nothing and must succeed
		if err := s.Delete(ctx, "k"); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	if _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after Delete: err = %v, want ErrNotFound", err)
	}
}

func testCompareAndDelete(t *testing.T, s store.Store, _ func()) {
	ctx := t.Context()
	rev := mustPut(t, s, "k", "v")
	tests := []struct {
		name    string
		key     string
		prevRev int64
		wantErr error
	}{
		{"stale revision", "k", rev - 1, store.ErrConflict},
		{"missing key", "missing", rev, store.ErrNotFound},
		{"current revision", "k", rev, nil},
		{"already deleted", "k", rev, store.ErrNotFound},
	}
	for _, tc := range tests {
		if err := s.CompareAndDelete(ctx, tc.key, tc.prevRev); !errors.Is(err, tc.wantErr) {
			t.Fatalf("%s: err = %v, want %v", tc.name, err, tc.wantErr)
		}
	}
}

func testTxnSuccess(t *testing.T, s store.Store, _ func()) {
	ctx := t.Context()
	oldRev := mustPut(t, s, "a", "old")
	mustPut(t, s, "gone", "x")
	rev, err := s.Txn(ctx,
		[]store.Cmp{store.AtRevision("a", oldRev), store.Absent("b")},
		[]store.Op{store.Put("a", []byte("new")), store.Put("b", []byte("b")), store.Delete("gone")})
	if err != nil {
		t.Fatalf("Txn: %v", err)
	}
	expectKV(t, s, "a", "new", rev)
	expectKV(t, s, "b", "b", rev)
	if _, err := s.Get(ctx, "gone"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get deleted key: err = %v, want ErrNotFound", err)
	}
}

func testTxnConflict(t *testing.T, s store.Store, _ func()) {
	ctx := t.Context()
	rev := mustPut(t, s, "a", "v")
	tests := []struct {
		name string
		cmps []store.Cmp
	}{
		{"stale revision", []store.Cmp{store.AtRevision("a", rev-1)}},
		{"present but must be absent", []store.Cmp{store.Absent("a")}},
		{"absent but revision given", []store.Cmp{store.AtRevision("missing", rev)}},
		{"second compare fails", []store.Cmp{store.AtRevision("a", rev), store.Absent("a")}},
	}
	for _, tc := range tests {
		_, err := s.Txn(ctx, tc.cmps, []store.Op{store.Put("a", []byte("changed")), store.Put("new", []byte("x"))})
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("%s: err = %v, want ErrConflict", tc.name, err)
		}
		expectKV(t, s, "a", "v", rev)
		if _, err := s.Get(ctx, "new"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s: failed Txn wrote a key: %v", tc.name, err)
		}
	}
}

func testListPrefix(t *testing.T, s store.Store, _ func()) {
	ctx := t.Context()
	for _, k := range []string{"a/bc/1", "a/b/2", "a/b", "a/b/1", "a/a/1", "b/1", "a/b/3/x"} {
		mustPut(t, s, k, "v:"+k)
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"a/b/", []string{"a/b/1", "a/b/2", "a/b/3/x"}},
		{"a/bc/", []string{"a/bc/1"}},
		{"a/", []string{"a/a/1", "a/b", "a/b/1", "a/b/2", "a/b/3/x", "a/bc/1"}},
		{"c/", nil},
		{"", []string{"a/a/1", "a/b", "a/b/1", "a/b/2", "a/b/3/x", "a/bc/1", "b/1"}},
	}
	for _, tc := range tests {
		kvs, err := s.List(ctx, tc.prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", tc.prefix, err)
		}
		var got []string
		for _, kv := range kvs {
			got = append(got, kv.Key)
			if string(kv.Value) != "v:"+kv.Key || kv.Revision <= 0 {
				t.Errorf("List(%q): %q = %q at revision %d", tc.prefix, kv.Key, kv.Value, kv.Revision)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("List(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}
}

func testRevisionMonotonic(t *testing.T, s store.Store, _ func()) {
	ctx := t.Context()
	var last int64
	check := func(what string, rev int64, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if rev <= last {
			t.Fatalf("%s: revision %d, not above %d", what, rev, last)
		}
		last = rev
	}
	rev, err := s.Put(ctx, "a", []byte("1"), store.NoLease)
	check("Put a", rev, err)
	rev, err = s.Put(ctx, "b", []byte("1"), store.NoLease)
	check("Put b", rev, err)
	rev, err = s.Create(ctx, "c", []byte("1"), store.NoLease)
	check("Create c", rev, err)
	rev, err = s.CompareAndSwap(ctx, "a", []byte("2"), mustGet(t, s, "a").Revision, store.NoLease)
	check("CAS a", rev, err)
	rev, err = s.Txn(ctx, nil, []store.Op{store.Put("d", nil), store.Delete("b")})
	check("Txn", rev, err)
	if err := s.Delete(ctx, "c"); err != nil {
		t.Fatalf("Delete c: %v", err)
	}
	rev, err = s.Put(ctx, "e", []byte("1"), store.NoLease)
	check("Put e after delete", rev, err)
	if got := mustGet(t, s, "d").Revision; got >= rev {
		t.Fatalf("untouched key d moved to revision %d", got)
	}
}

func testCancelledContext(t *testing.T, s store.Store, _ func()) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls := map[string]error{}
	_, calls["Get"] = s.Get(ctx, "k")
	_, calls["List"] = s.List(ctx, "")
	_, calls["Put"] = s.Put(ctx, "k", nil, store.NoLease)
	_, calls["Txn"] = s.Txn(ctx, nil, []store.Op{store.Put("k", nil)})
	_, calls["Watch"] = s.Watch(ctx, "", 0)
	_, calls["Grant"] = s.Grant(ctx, time.Minute)
	for name, err := range calls {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with cancelled ctx: err = %v, want context.Canceled", name, err)
		}
	}
	if _, err := s.Get(t.Context(), "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a cancelled write was applied: %v", err)
	}
}

// writeMix performs a fixed set of writes under prefix and returns the
// events a watcher of prefix must see, in order.
func writeMix(t *testing.T, s store.Store, prefix string) []store.Event {
	ctx := t.Context()
	var want []store.Event
	put := func(key, val string, rev int64) {
		want = append(want, store.Event{Type: store.EventPut, KV: store.KV{Key: key, Value: []byte(val), Revision: rev}})
	}
	del := func(key string, rev int64) {
		want = append(want, store.Event{Type: store.EventDelete, KV: store.KV{Key: key, Revision: rev}})
	}
	put(prefix+"1", "a", mustPut(t, s, prefix+"1", "a"))
	mustPut(t, s, prefix[:len(prefix)-1]+"x/1", "neighbour") // must not be seen
	put(prefix+"2", "b", mustPut(t, s, prefix+"2", "b"))
	put(prefix+"1", "c", mustPut(t, s, prefix+"1", "c"))
	rev, err := s.Txn(ctx, nil, []store.Op{
		store.Put(prefix+"3", []byte("d")), store.Delete(prefix + "2"), store.Put("other/1", nil)})
	if err != nil {
		t.Fatalf("Txn: %v", err)
	}
	put(prefix+"3", "d", rev)
	del(prefix+"2", rev)
	if err := s.Delete(ctx, prefix+"1"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	del(prefix+"1", 0) // revision unknown: Delete does not return it
	return want
}

func testWatchOrder(t *testing.T, s store.Store, _ func()) {
	ch, err := s.Watch(t.Context(), "w/", 0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	want := writeMix(t, s, "w/")
	expectEvents(t, ch, want)
}

func testWatchReplay(t *testing.T, s store.Store, _ func()) {
	ctx := t.Context()
	start := mustPut(t, s, "start", "")
	want := writeMix(t, s, "w/")
	ch, err := s.Watch(ctx, "w/", start)
	if err != nil {
		t.Fatalf("Watch(after %d): %v", start, err)
	}
	live := mustPut(t, s, "w/live", "e")
	want = append(want, store.Event{Type: store.EventPut, KV: store.KV{Key: "w/live", Value: []byte("e"), Revision: live}})
	expectEvents(t, ch, want)

	// Replay from the middle: only events above the given revision.
	mid := want[2].KV.Revision
	ch2, err := s.Watch(ctx, "w/", mid)
	if err != nil {
		t.Fatalf("Watch(after %d): %v", mid, err)
	}
	var rest []store.Event
	for _, ev := range want {
		if ev.KV.Revision > mid || ev.KV.Revision == 0 {
			rest = append(rest, ev)
		}
	}
	expectEvents(t, ch2, rest)
}

func testWatchCancel(t *testing.T, s store.Store, _ func()) {
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := s.Watch(ctx, "w/", 0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	cancel()
	expectClosed(t, ch)
	mustPut(t, s, "w/after", "x") // writers are not disturbed by the gone watcher
}

func testWatchClose(t *testing.T, s store.Store, closeStore func()) {
	ch, err := s.Watch(t.Context(), "", 0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	closeStore()
	expectClosed(t, ch)
}

func testLeaseExpiry(t *testing.T, s store.Store, scale time.Duration) {
	ctx := t.Context()
	id, err := s.Grant(ctx, scale*shortestTTL)
	if err != nil {
		t.Fatalf("Grant: %v", err)
	}
	ch, err := s.Watch(ctx, "l/", 0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	for _, k := range []string{"l/1", "l/2"} {
		if _, err := s.Put(ctx, k, []byte("v"), id); err != nil {
			t.Fatalf("Put %q with lease: %v", k, err)
		}
	}
	mustPut(t, s, "l/keep", "v")
	if kv := mustGet(t, s, "l/1"); kv.Lease != id {
		t.Fatalf("Get l/1: lease %d, want %d", kv.Lease, id)
	}
	deleted := map[string]bool{}
	timeout := time.After(scale * waitFor)
	for len(deleted) < 2 {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("watch closed before the lease expired")
			}
			if ev.Type == store.EventDelete {
				deleted[ev.KV.Key] = true
			}
		case <-timeout:
			t.Fatalf("lease did not expire within %v; deleted %v", scale*waitFor, deleted)
		}
	}
	if !deleted["l/1"] || !deleted["l/2"] {
		t.Fatalf("delete events for %v, want l/1 and l/2", deleted)
	}
	if _, err := s.Get(ctx, "l/1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get expired key: err = %v, want ErrNotFound", err)
	}
	mustGet(t, s, "l/keep")
	if err := s.KeepAlive(ctx, id); !errors.Is(err, store.ErrLeaseNotFound) {
		t.Fatalf("KeepAlive expired lease: err = %v, want ErrLeaseNotFound", err)
	}
	if _, err := s.Put(ctx, "l/3", nil, id); !errors.Is(err, store.ErrLeaseNotFound) {
		t.Fatalf("Put with expired lease: err = %v, want ErrLeaseNotFound", err)
	}
}

func testLeaseKeepAlive(t *testing.T, s store.Store, scale time.Duration) {
	ctx := t.Context()
	ttl := scale * 300 * time.Millisecond
	id, err := s.Grant(ctx, ttl)
	if err != nil {
		t.Fatalf("Grant: %v", err)
	}
	if _, err := s.Put(ctx, "k", []byte("v"), id); err != nil {
		t.Fatalf("Put: %v", err)
	}
	for end := time.Now().Add(4 * ttl); time.Now().Before(end); time.Sleep(ttl / 4) {
		if err := s.KeepAlive(ctx, id); err != nil {
			t.Fatalf("KeepAlive: %v", err)
		}
	}
	mustGet(t, s, "k")
	pollGone(t, s, "k", scale*waitFor)
}

func testLeaseRevoke(t *testing.T, s store.Store, _ func()) {
	ctx := t.Context()
	id, err := s.Grant(ctx, time.Minute)
	if err != nil {
		t.Fatalf("Grant: %v", err)
	}
	ch, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	r1, err := s.Put(ctx, "leased/1", []byte("v"), id)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	r2, err := s.Create(ctx, "leased/2", []byte("v"), id)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	// Moving a key off the lease means revoking no longer deletes it.
	r3, err := s.Put(ctx, "moved", []byte("v"), id)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	r4 := mustPut(t, s, "moved", "w")
	if err := s.Revoke(ctx, id); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	expectEvents(t, ch, []store.Event{
		{Type: store.EventPut, KV: store.KV{Key: "leased/1", Value: []byte("v"), Revision: r1}},
		{Type: store.EventPut, KV: store.KV{Key: "leased/2", Value: []byte("v"), Revision: r2}},
		{Type: store.EventPut, KV: store.KV{Key: "moved", Value: []byte("v"), Revision: r3}},
		{Type: store.EventPut, KV: store.KV{Key: "moved", Value: []byte("w"), Revision: r4}},
		{Type: store.EventDelete, KV: store.KV{Key: "leased/1"}},
		{Type: store.EventDelete, KV: store.KV{Key: "leased/2"}},
	})
	if kvs, err := s.List(ctx, "leased/"); err != nil || len(kvs) != 0 {
		t.Fatalf("List after Revoke = %v, %v; want empty", kvs, err)
	}
	expectKV(t, s, "moved", "w", r4)
	if err := s.Revoke(ctx, id); !errors.Is(err, store.ErrLeaseNotFound) {
		t.Fatalf("second Revoke: err = %v, want ErrLeaseNotFound", err)
	}
	if _, err := s.Put(ctx, "k", nil, id); !errors.Is(err, store.ErrLeaseNotFound) {
		t.Fatalf("Put with revoked lease: err = %v, want ErrLeaseNotFound", err)
	}
}

func testLeaseUnknown(t *testing.T, s store.Store, _ func()) {
	ctx := t.Context()
	const unknown store.LeaseID = 0x7eadbeef
	calls := map[string]error{}
	_, calls["Put"] = s.Put(ctx, "k", nil, unknown)
	_, calls["Create"] = s.Create(ctx, "k", nil, unknown)
	_, calls["Txn"] = s.Txn(ctx, nil, []store.Op{store.PutLease("k", nil, unknown)})
	calls["KeepAlive"] = s.KeepAlive(ctx, unknown)
	calls["Revoke"] = s.Revoke(ctx, unknown)
	for name, err := range calls {
		if !errors.Is(err, store.ErrLeaseNotFound) {
			t.Errorf("%s with unknown lease: err = %v, want ErrLeaseNotFound", name, err)
		}
	}
	if _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a write with an unknown lease was applied: %v", err)
	}
}

func testConcurrentCAS(t *testing.T, s store.Store, _ func()) {
	const workers, perWorker = 8, 25
	ctx := t.Context()
	mustPut(t, s, "counter", "0")
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range perWorker {
				if err := increment(ctx, s, "counter"); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := string(mustGet(t, s, "counter").Value); got != strconv.Itoa(workers*perWorker) {
		t.Fatalf("counter = %s, want %d", got, workers*perWorker)
	}
}

// increment adds one to the counter at key with a CAS retry loop.
func increment(ctx context.Context, s store.Store, key string) error {
	for {
		kv, err := s.Get(ctx, key)
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(string(kv.Value))
		if err != nil {
			return err
		}
		_, err = s.CompareAndSwap(ctx, key, []byte(strconv.Itoa(n+1)), kv.Revision, store.NoLease)
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
}

func mustPut(t *testing.T, s store.Store, key, value string) int64 {
	t.Helper()
	rev, err := s.Put(t.Context(), key, []byte(value), store.NoLease)
	if err != nil {
		t.Fatalf("Put %q: %v", key, err)
	}
	return rev
}

func mustGet(t *testing.T, s store.Store, key string) store.KV {
	t.Helper()
	kv, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get %q: %v", key, err)
	}
	return kv
}

func expectKV(t *testing.T, s store.Store, key, value string, rev int64) {
	t.Helper()
	kv := mustGet(t, s, key)
	if kv.Key != key || string(kv.Value) != value || kv.Revision != rev {
		t.Fatalf("Get %q = {%q %q rev %d}, want {%q %q rev %d}", key, kv.Key, kv.Value, kv.Revision, key, value, rev)
	}
}

// pollGone waits up to limit until key is deleted (by lease expiry).
func pollGone(t *testing.T, s store.Store, key string, limit time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := s.Get(t.Context(), key); errors.Is(err, store.ErrNotFound) {
			return
		}
	}
	t.Fatalf("%q still present after %v", key, limit)
}

// expectEvents reads len(want) events and compares type, key, value and
// revision. Revisions never go down; a wanted revision of 0 means "unknown,
// but above the last known one".
func expectEvents(t *testing.T, ch <-chan store.Event, want []store.Event) {
	t.Helper()
	timeout := time.After(waitFor)
	var prev, known int64
	for i, w := range want {
		select {
		case got, ok := <-ch:
			if !ok {
				t.Fatalf("event %d: channel closed, want %s", i, formatEvent(w))
			}
			if got.KV.Revision < prev {
				t.Fatalf("event %d = %s: revision went back from %d", i, formatEvent(got), prev)
			}
			prev = got.KV.Revision
			if w.KV.Revision == 0 {
				if got.KV.Revision <= known {
					t.Fatalf("event %d = %s: revision not above %d", i, formatEvent(got), known)
				}
				w.KV.Revision = got.KV.Revision
			} else {
				known = w.KV.Revision
			}
			if formatEvent(got) != formatEvent(w) {
				t.Fatalf("event %d = %s, want %s", i, formatEvent(got), formatEvent(w))
			}
		case <-timeout:
			t.Fatalf("event %d: none within %v, want %s", i, waitFor, formatEvent(w))
		}
	}
}

func formatEvent(ev store.Event) string {
	kind := map[store.EventType]string{store.EventPut: "put", store.EventDelete: "delete"}[ev.Type]
	if ev.Type == store.EventDelete && !bytes.Equal(ev.KV.Value, nil) {
		kind += "(with value!)"
	}
	return fmt.Sprintf("%s %q=%q@%d", kind, ev.KV.Key, ev.KV.Value, ev.KV.Revision)
}

// expectClosed drains ch until it is closed.
func expectClosed(t *testing.T, ch <-chan store.Event) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("watch channel not closed within %v", waitFor)
		}
	}
}
