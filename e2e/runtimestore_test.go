package e2e

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/tether-net/tether/internal/store/bolt"
	"github.com/tether-net/tether/internal/testutil"
)

// keysUnder lists the keys under prefix in the bolt file at path (the
// daemon must be stopped: it holds the file's lock).
func keysUnder(t *testing.T, path, prefix string) []string {
	t.Helper()
	st, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kvs, err := st.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range kvs {
		keys = append(keys, kv.Key)
	}
	return keys
}

// The records of sandboxes live in the runtime store under the exec-root
// (docs/lifecycle.md, "Two stores"), networks in the durable store under
// the data-root; a restart finds both and cuts no sandbox off, under every
// start mode.
func TestRuntimeStoreAcrossRestart(t *testing.T) {
	forModes(t, func(t *testing.T, mode testutil.StartMode) {
		_, d := hostMode(t, mode)
		d.MustTether("network", "create", "--subnet", "10.92.0.0/24", "rtstore")
		// With a process each: under a mount namespace of its own the
		// daemon keeps across a restart only sandboxes a process holds
		// (docs/sandboxes.md).
		runDetached(t, d, "a", "--network", "rtstore", "--", "sleep", "600")
		runDetached(t, d, "b", "--network", "rtstore", "--", "sleep", "600")
		sb := sandbox(t, d, "a")
		d.Stop()
		durable := filepath.Join(d.Dir, "data", "tether.db")
		runtime := filepath.Join(d.Dir, "exec", "state.db")
		const sandboxes, networks = "tether/v1/local/sandboxes/", "tether/v1/local/networks/"
		if got := keysUnder(t, runtime, sandboxes+sb.ID); len(got) != 1 {
			t.Errorf("runtime store %s: sandbox record of a: %v", runtime, got)
		}
		if got := keysUnder(t, durable, sandboxes); len(got) != 0 {
			t.Errorf("durable store %s holds sandbox records: %v", durable, got)
		}
		if got := keysUnder(t, durable, networks); len(got) == 0 {
			t.Errorf("durable store %s holds no network record", durable)
		}
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
		if got := sandbox(t, d, "a"); got.ID != sb.ID {
			t.Fatalf("after the restart: sandbox a is %.12s, want %.12s", got.ID, sb.ID)
		}
		if !ping(d, "a", ip(t, d, "b", "rtstore")) {
			t.Error("a does not reach b after the restart")
		}
	})
}
