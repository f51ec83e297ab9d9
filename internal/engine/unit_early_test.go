package engine

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/bolt"
)

// countingStore counts the write transactions made on a store.
type countingStore struct {
	store.Store
	txns atomic.Int64
}

func (s *countingStore) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	s.txns.Add(1)
	return s.Store.Txn(ctx, cmps, ops)
}

// withCountingRuntime gives the rig a runtime store that counts its writes.
func withCountingRuntime(c **countingStore) rigOption {
	return func(r *rig) {
		*c = &countingStore{Store: openBolt(r.t, "state.db", bolt.WithNoSync())}
		r.rt = *c
	}
}

// storedRecord reads a sandbox's record from the runtime store.
func storedRecord(t *testing.T, r *rig, id string) *Sandbox {
	t.Helper()
	kv, err := r.rt.Get(r.ctx, keySandboxes+id)
	if err != nil {
		t.Fatalf("record of %s: %v", id, err)
	}
	var sb Sandbox
	if err := json.Unmarshal(kv.Value, &sb); err != nil {
		t.Fatal(err)
	}
	return &sb
}

// An attach on a driver that names its host ends (driver.HostIfNamer) is
// recorded beside the join, once: the answer's record is the early write,
// with the host end the driver made.
func TestEarlyRecordIsTheAttachsOnlyWrite(t *testing.T) {
	var rt *countingStore
	r := newRig(t, withCountingRuntime(&rt))
	n := r.network("e1", "bridge", "10.62.0.0/24")
	// The record is in the store while the driver joins: wait for it
	// there (a minute: a deadline for a hang, not a timing).
	var during atomic.Bool
	r.drv["bridge"].SetJoinHook(func(ep driver.Endpoint) {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			kvs, _ := r.rt.List(r.ctx, keySandboxes)
			for _, kv := range kvs {
				if strings.Contains(string(kv.Value), ep.ID) {
					during.Store(true)
					return
				}
			}
		}
	})
	before := rt.txns.Load()
	sb := r.sandbox("web", "e1")
	r.drv["bridge"].SetJoinHook(nil)
	if !during.Load() {
		t.Error("the endpoint's record was not in the store while the driver joined")
	}
	if got := rt.txns.Load() - before; got != 1 {
		t.Errorf("the attach wrote the runtime store %d times, want once (the early write)", got)
	}
	ep := endpointOn(storedRecord(t, r, sb.ID), n.ID)
	if ep == nil {
		t.Fatal("no endpoint recorded")
	}
	joined := joined(t, r, ep.ID)
	if ep.HostIfName == "" || ep.HostIfName != joined.Endpoint.HostIfName {
		t.Errorf("recorded host end %q, the driver made %q", ep.HostIfName, joined.Endpoint.HostIfName)
	}
	if got := endpointOn(sb, n.ID); got.HostIfName != ep.HostIfName {
		t.Errorf("answer's host end %q, record's %q", got.HostIfName, ep.HostIfName)
	}
	sticky, err := r.rt.Get(r.ctx, keySticky+n.ID+"/web")
	if err != nil || string(sticky.Value) != ep.Address.Addr().String() {
		t.Errorf("sticky address %q (%v), want %s", sticky.Value, err, ep.Address.Addr())
	}
}

// A driver that had to pick another host end name than the one it was
// given: the record is written again, with the name it used.
func TestEarlyRecordRewrittenWhenTheJoinRenames(t *testing.T) {
	var rt *countingStore
	r := newRig(t, withCountingRuntime(&rt))
	n := r.network("e2", "bridge", "10.63.0.0/24")
	r.drv["bridge"].RenameNextJoin()
	before := rt.txns.Load()
	sb := r.sandbox("web", "e2")
	if got := rt.txns.Load() - before; got != 2 {
		t.Errorf("the attach wrote the runtime store %d times, want twice (early, then the renamed host end)", got)
	}
	ep := endpointOn(storedRecord(t, r, sb.ID), n.ID)
	if joined := joined(t, r, ep.ID); ep.HostIfName != joined.Endpoint.HostIfName {
		t.Errorf("recorded host end %q, the driver made %q", ep.HostIfName, joined.Endpoint.HostIfName)
	}
	r.restart() // what a restart finds is what the kernel has
	if got := endpointOn(r.getSandbox("web"), n.ID); got.HostIfName != ep.HostIfName {
		t.Errorf("after a restart: host end %q, want %q", got.HostIfName, ep.HostIfName)
	}
}

// A failed join undoes the early write: the sandbox's record is as before
// the attach and the sticky address as it was (absent, or the old one).
func TestEarlyRecordUndoneWhenTheJoinFails(t *testing.T) {
	var rt *countingStore
	r := newRig(t, withCountingRuntime(&rt))
	r.network("e3", "bridge", "10.64.0.0/24")
	n4 := r.network("e4", "bridge", "10.65.0.0/24")
	sb := r.sandbox("web", "e3")
	want := storedRecord(t, r, sb.ID)

	r.drv["bridge"].FailNext("Join", errors.New("injected"))
	if err := r.e.Connect(r.ctx, "e4", "web", AttachSpec{}); err == nil {
		t.Fatal("connect with a failing join succeeded")
	}
	got := storedRecord(t, r, sb.ID)
	if len(got.Endpoints) != len(want.Endpoints) || endpointOn(got, n4.ID) != nil {
		t.Errorf("record after the failed attach has %d endpoints (one on e4: %v), want %d",
			len(got.Endpoints), endpointOn(got, n4.ID) != nil, len(want.Endpoints))
	}
	if present(t, r, r.rt, keySticky+n4.ID+"/web") {
		t.Error("the failed attach left a sticky address")
	}

	// With a sticky address from an earlier attach, the undo puts it back.
	old := "10.65.0.77"
	if _, err := r.rt.Put(r.ctx, keySticky+n4.ID+"/web", []byte(old), store.NoLease); err != nil {
		t.Fatal(err)
	}
	r.drv["bridge"].FailNext("Join", errors.New("injected"))
	if err := r.e.Connect(r.ctx, "e4", "web", AttachSpec{IP: "10.65.0.9"}); err == nil {
		t.Fatal("connect with a failing join succeeded")
	}
	if kv, err := r.rt.Get(r.ctx, keySticky+n4.ID+"/web"); err != nil || string(kv.Value) != old {
		t.Errorf("sticky address after the failed attach %q (%v), want the earlier %s", kv.Value, err, old)
	}
	r.restart()
	if sb := r.getSandbox("web"); len(sb.Endpoints) != 1 {
		t.Errorf("after a restart the sandbox has %d endpoints, want 1", len(sb.Endpoints))
	}
}

// earlyHolds trusts an early write only while the store still holds it:
// a later write of the record (another operation's, under e.mu), or other
// ops, make the commit write again.
func TestEarlyHoldsOnlyWhatTheStoreHolds(t *testing.T) {
	r := newRig(t, withRuntimeStore())
	ops := []store.Op{store.Put(keySandboxes+"x", []byte(`{"id":"x"}`)), store.Put(keySticky+"n/x", []byte("10.0.0.2"))}
	rev, err := r.rt.Txn(r.ctx, nil, ops)
	if err != nil {
		t.Fatal(err)
	}
	x := &early{done: make(chan struct{}), ops: ops, rev: rev}
	close(x.done)
	if !r.e.earlyHolds(r.ctx, x, ops) {
		t.Error("an untouched early write does not hold")
	}
	other := []store.Op{store.Put(keySandboxes+"x", []byte(`{"id":"x","name":"y"}`)), ops[1]}
	if r.e.earlyHolds(r.ctx, x, other) {
		t.Error("an early write holds for other ops")
	}
	if r.e.earlyHolds(r.ctx, x, ops[:1]) {
		t.Error("an early write holds for fewer ops")
	}
	if r.e.earlyHolds(r.ctx, &early{done: x.done, ops: ops, rev: rev, err: errors.New("failed")}, ops) {
		t.Error("a failed early write holds")
	}
	if r.e.earlyHolds(r.ctx, nil, ops) {
		t.Error("no early write holds")
	}
	if _, err := r.rt.Txn(r.ctx, nil, ops[:1]); err != nil { // the same bytes, written again
		t.Fatal(err)
	}
	if r.e.earlyHolds(r.ctx, x, ops) {
		t.Error("an early write holds after the record was written again")
	}
}
