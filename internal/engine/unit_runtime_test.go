package engine

import (
	"errors"
	"testing"

	"github.com/tether-net/tether/internal/store"
)

// present reports whether key is in st, failing on any other error.
func present(t *testing.T, r *rig, st store.Store, key string) bool {
	t.Helper()
	_, err := st.Get(r.ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// With a runtime store, sandbox records and sticky addresses go there and
// nothing an attach writes goes to the durable store; a restart rebuilds
// the address bitmap from the records.
func TestRuntimeStoreHoldsSandboxRecords(t *testing.T) {
	r := newRig(t, withRuntimeStore())
	n := r.network("rt", "bridge", "10.61.0.0/24")
	bitmap, err := r.st.Get(r.ctx, keyIPAM+n.ID)
	if err != nil {
		t.Fatal(err)
	}
	sb := r.sandbox("web", "rt")
	addr := sb.Endpoints[0].Address.Addr().String()
	for _, tc := range []struct {
		key           string
		inRT, inDurab bool
	}{
		{keySandboxes + sb.ID, true, false},
		{keySticky + n.ID + "/web", true, false},
		{keyNetworks + n.ID, false, true},
		{keyIPAM + n.ID, false, true},
	} {
		if got := present(t, r, r.rt, tc.key); got != tc.inRT {
			t.Errorf("%s in the runtime store: %v, want %v", tc.key, got, tc.inRT)
		}
		if got := present(t, r, r.st, tc.key); got != tc.inDurab {
			t.Errorf("%s in the durable store: %v, want %v", tc.key, got, tc.inDurab)
		}
	}
	if after, _ := r.st.Get(r.ctx, keyIPAM+n.ID); after.Revision != bitmap.Revision {
		t.Errorf("the attach wrote the durable bitmap (revision %d -> %d)", bitmap.Revision, after.Revision)
	}
	if !r.inUse("rt", addr) {
		t.Fatalf("%s not in use after the attach", addr)
	}

	r.restart()
	if got := r.getSandbox("web"); len(got.Endpoints) != 1 || got.Endpoints[0].Address.Addr().String() != addr {
		t.Fatalf("after restart: %+v", got)
	}
	if !r.inUse("rt", addr) {
		t.Errorf("%s free after a restart while its sandbox lives", addr)
	}
	// A second sandbox does not get the first one's address.
	if other := r.sandbox("db", "rt"); other.Endpoints[0].Address.Addr().String() == addr {
		t.Errorf("address %s given twice after a restart", addr)
	}

	if err := r.e.RemoveSandbox(r.ctx, "web", false); err != nil {
		t.Fatal(err)
	}
	if present(t, r, r.rt, keySandboxes+sb.ID) {
		t.Error("the removed sandbox's record is still in the runtime store")
	}
	r.restart()
	if r.inUse("rt", addr) {
		t.Errorf("%s still in use after its sandbox was removed and the daemon restarted", addr)
	}
	// Removing the network deletes its sticky addresses from the runtime store.
	if err := r.e.RemoveSandbox(r.ctx, "db", false); err != nil {
		t.Fatal(err)
	}
	if err := r.e.RemoveNetwork(r.ctx, "rt"); err != nil {
		t.Fatal(err)
	}
	if kvs, err := r.rt.List(r.ctx, keySticky+n.ID+"/"); err != nil || len(kvs) != 0 {
		t.Errorf("sticky addresses of a removed network: %v %v", kvs, err)
	}
}

// A daemon from before the runtime store kept sandbox records in the
// durable store: the first start with one moves them, and the sandbox
// lives on.
func TestRuntimeStoreMovesOldRecords(t *testing.T) {
	r := newRig(t)
	r.network("old", "bridge", "10.62.0.0/24")
	sb := r.sandbox("web", "old")
	if !present(t, r, r.st, keySandboxes+sb.ID) {
		t.Fatal("without a runtime store the record is not in the durable store")
	}
	r.stop()
	withRuntimeStore()(r)
	r.start()
	if present(t, r, r.st, keySandboxes+sb.ID) || !present(t, r, r.rt, keySandboxes+sb.ID) {
		t.Error("the sandbox record was not moved to the runtime store")
	}
	if kvs, _ := r.st.List(r.ctx, keySticky); len(kvs) != 0 {
		t.Errorf("sticky addresses left in the durable store: %v", kvs)
	}
	got := r.getSandbox("web")
	if len(got.Endpoints) != 1 || !r.inUse("old", got.Endpoints[0].Address.Addr().String()) {
		t.Fatalf("after the move: %+v", got)
	}
	// A record already in the runtime store wins over a stale durable copy.
	stale := []byte(`{"id":"` + sb.ID + `","name":"stale"}`)
	if _, err := r.st.Put(r.ctx, keySandboxes+sb.ID, stale, store.NoLease); err != nil {
		t.Fatal(err)
	}
	r.restart()
	if got := r.getSandbox("web"); got.Name != "web" {
		t.Errorf("the stale durable copy replaced the runtime record: %+v", got)
	}
	if present(t, r, r.st, keySandboxes+sb.ID) {
		t.Error("the stale durable copy was not deleted")
	}
}
