package testutil

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tether-net/tether/internal/netns"
)

// The two ways tests make network namespaces:
//   - NetNS: a named one (ip netns add, /run/netns/NAME, loopback up), for
//     tests that drive it with ip -n or hand its name to the daemon;
//   - NSDir and NetNSIn: nameless ones bound under a private directory the
//     way the daemon keeps its sandboxes' (netns.PrepareDir, netns.Create;
//     loopback down, as a fresh namespace has it), for tests of the code
//     that makes and joins them.
// Both need root (RequireRoot is called) and leave nothing behind.

// NSDir returns a fresh netns.PrepareDir'd directory for namespace files.
// When the test ends every namespace file still in it is deleted, the
// directory is released, and a mount left under it fails the test.
func NSDir(tb testing.TB) string {
	tb.Helper()
	RequireRoot(tb)
	dir := filepath.Join(tb.TempDir(), "ns")
	if err := netns.PrepareDir(dir); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if err := netns.Delete(filepath.Join(dir, e.Name())); err != nil {
				tb.Error(err)
			}
		}
		if err := netns.ReleaseDir(dir); err != nil {
			tb.Error(err)
		}
		if ms, err := netns.MountedUnder(dir); err != nil || len(ms) > 0 {
			tb.Errorf("mounts left under %q: %v (%v)", dir, ms, err)
		}
	})
	return dir
}

// NetNSIn creates a network namespace file under dir (an NSDir) and returns
// its path; the test's end deletes it.
func NetNSIn(tb testing.TB, dir string) string {
	tb.Helper()
	path := filepath.Join(dir, "sb-"+Suffix())
	if err := netns.Create(path); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := netns.Delete(path); err != nil {
			tb.Error(err)
		}
	})
	return path
}
