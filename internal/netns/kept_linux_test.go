package netns

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// readSysctl reads /proc/sys/KEY inside the namespace at path.
func readSysctl(t *testing.T, path, key string) string {
	t.Helper()
	var v []byte
	if err := Do(path, func() error {
		var err error
		v, err = os.ReadFile("/proc/sys/" + key)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(v))
}

// linkIn reports whether the namespace at path has a link named name, asked
// through a handle opened by a visit (not a kept one).
func linkIn(t *testing.T, path, name string) bool {
	t.Helper()
	var found bool
	if err := Do(path, func() error {
		_, err := netlink.LinkByName(name)
		found = err == nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return found
}

// addThroughNewHandle adds a bridge named name through NewHandle(path),
// and checks that no handle is kept afterwards (taken, or closed as stale).
func addThroughNewHandle(t *testing.T, path, name string) {
	t.Helper()
	h, err := NewHandle(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if keptCount() != 0 {
		t.Errorf("%d handles kept after NewHandle, want 0", keptCount())
	}
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		t.Fatal(err)
	}
}

// The handle CreateKeep opens is the first NewHandle's, acts in the new
// namespace, and is handed out once; the init's sysctls are written there.
func TestCreateKeepHandsItsHandleToNewHandle(t *testing.T) {
	path := filepath.Join(testDir(t), "net")
	id, err := CreateKeep(path, func() error {
		return WriteSysctls("net/ipv6/conf", "default/disable_ipv6", "1", "all/accept_ra", "0")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Delete(path) })
	if got, err := IDOf(path); err != nil || got != id {
		t.Fatalf("CreateKeep's id %v, the file's %v (%v)", id, got, err)
	}
	if keptCount() != 1 {
		t.Fatalf("%d handles kept, want 1", keptCount())
	}
	for key, want := range map[string]string{"net/ipv6/conf/default/disable_ipv6": "1", "net/ipv6/conf/all/accept_ra": "0"} {
		if got := readSysctl(t, path, key); got != want {
			t.Errorf("%s = %s in the new namespace, want %s", key, got, want)
		}
	}
	const name = "tether-kept0"
	addThroughNewHandle(t, path, name)
	if !linkIn(t, path, name) {
		t.Error("the kept handle's link is not in the new namespace")
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Errorf("link %q appeared in the caller's namespace", name)
	}
}

// A kept handle is never given for another namespace at the same path: the
// file made to point elsewhere (behind Tether's back) gets a fresh handle
// there, and the kept one is closed.
func TestKeptHandleIsNotGivenForAnotherNamespace(t *testing.T) {
	dir := testDir(t)
	path, other := filepath.Join(dir, "net"), filepath.Join(dir, "other")
	if _, err := CreateKeep(path, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Delete(path) })
	if err := Create(other); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Delete(other) })
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if err := bindMount(other, path); err != nil {
		t.Fatal(err)
	}
	const name = "tether-kept1"
	addThroughNewHandle(t, path, name)
	if !linkIn(t, other, name) {
		t.Error("NewHandle acted in the namespace the path used to hold, not the one it holds")
	}
}

// Delete closes a handle nobody took (it would hold the namespace).
func TestDeleteClosesTheKeptHandle(t *testing.T) {
	path := filepath.Join(testDir(t), "net")
	if _, err := CreateKeep(path, nil); err != nil {
		t.Fatal(err)
	}
	if err := Delete(path); err != nil {
		t.Fatal(err)
	}
	if keptCount() != 0 {
		t.Errorf("%d handles kept after Delete, want 0", keptCount())
	}
}

// An init failure undoes everything: no file, no kept handle.
func TestCreateKeepRollsBack(t *testing.T) {
	path := filepath.Join(testDir(t), "net")
	_, err := CreateKeep(path, func() error { return WriteSysctls("net/ipv6/conf", "default/no_such_key", "1") })
	if err == nil || !strings.Contains(err.Error(), "/proc/sys/net/ipv6/conf/default/no_such_key") {
		t.Fatalf("CreateKeep with a bad sysctl: %v, want an error naming the key", err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("namespace file left after a failed create: %v", err)
	}
	if keptCount() != 0 {
		t.Errorf("%d handles kept after a failed create, want 0", keptCount())
	}
}

func TestWriteSysctlsRejects(t *testing.T) {
	for name, tc := range map[string]struct {
		dir  string
		kv   []string
		want string
	}{
		"key without value": {"net/ipv6/conf", []string{"default/accept_ra"}, "a key without a value"},
		"missing directory": {"net/no_such_dir", []string{"x", "1"}, "/proc/sys/net/no_such_dir"},
	} {
		if err := WriteSysctls(tc.dir, tc.kv...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
}
