package netns

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/testutil/gate"
)

// testDir returns a fresh PrepareDir'd directory, released at cleanup with
// a check that no mount under it survives.
func testDir(t testing.TB) string {
	t.Helper()
	gate.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "ns")
	if err := PrepareDir(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ReleaseDir(dir); err != nil {
			t.Error(err)
		}
		if ms, err := MountedUnder(dir); err != nil || len(ms) > 0 {
			t.Errorf("mounts left under %q: %v (%v)", dir, ms, err)
		}
	})
	return dir
}

// testNS creates a netns in a fresh dir; cleanup deletes it.
func testNS(t testing.TB) string {
	t.Helper()
	path := filepath.Join(testDir(t), "net")
	if err := Create(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Delete(path); err != nil {
			t.Error(err)
		}
	})
	return path
}

func inode(t testing.TB, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func threadNetIno(t testing.TB) uint64 { return inode(t, threadNSPath("net")) }

// tasksIn returns the threads of this process whose netns inode is ino.
func tasksIn(t testing.TB, ino uint64) []string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var in []string
	for _, e := range tasks {
		var st unix.Stat_t
		if unix.Stat("/proc/self/task/"+e.Name()+"/ns/net", &st) == nil && st.Ino == ino {
			in = append(in, e.Name())
		}
	}
	return in
}

func TestParseMountInfoLine(t *testing.T) {
	for _, tc := range []struct {
		line     string
		ok       bool
		point    string
		isShared bool
	}{
		{"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw", true, "/mnt2", false},
		{"25 1 0:22 / /run rw shared:5 - tmpfs tmpfs rw", true, "/run", true},
		{"90 25 0:22 /x /run/a\\040b rw - tmpfs tmpfs rw", true, "/run/a b", false},
		{"91 25 0:22 /x /tmp/ns rw shared:7 master:2 - tmpfs tmpfs rw", true, "/tmp/ns", true},
		{"short line", false, "", false},
		{"1 2 3:4 / /no/separator rw shared:1", false, "", false},
	} {
		m, ok := parseMountInfoLine(tc.line)
		if ok != tc.ok || m.point != tc.point || (ok && m.shared() != tc.isShared) {
			t.Errorf("parse %q = %+v, %v; want point %q shared %v ok %v", tc.line, m, ok, tc.point, tc.isShared, tc.ok)
		}
	}
}

func TestUnescapeMountInfo(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:         "/plain",
		`/a\040b`:        "/a b",
		`/tab\011x\134y`: "/tab\tx\\y",
		`/trailing\04`:   `/trailing\04`,
	} {
		if got := unescapeMountInfo(in); got != want {
			t.Errorf("unescape %q = %q, want %q", in, got, want)
		}
	}
}

func TestIsNSFile(t *testing.T) {
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"/proc/self/ns/net": true,
		"/proc/self/ns/uts": true,
		plain:               false,
		plain + ".missing":  false,
	} {
		if got := IsNSFile(path); got != want {
			t.Errorf("IsNSFile(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestDeleteMissingIsNil(t *testing.T) {
	if err := Delete(filepath.Join(t.TempDir(), "nope")); err != nil {
		t.Fatal(err)
	}
}

func TestBindProcNSRejectsUnknownKind(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x")
	if err := BindProcNS(os.Getpid(), "pid_for_children", path); err == nil {
		t.Fatal("want error for unknown kind")
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file left behind: %v", err)
	}
}

func TestPrepareDir(t *testing.T) {
	dir := testDir(t)
	if err := PrepareDir(dir); err != nil { // idempotent
		t.Fatal(err)
	}
	ms, err := MountedUnder(dir)
	if err != nil || len(ms) != 1 {
		t.Fatalf("want exactly one mount at %q, got %v (%v)", dir, ms, err)
	}
	if err := CheckDir(dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("mode %v (%v), want 0700", st.Mode(), err)
	}
	plain := t.TempDir()
	if err := CheckDir(plain); !errors.Is(err, ErrDirNotPrepared) {
		t.Fatalf("CheckDir(unprepared) = %v, want ErrDirNotPrepared", err)
	}
}

func TestCheckDirRejectsShared(t *testing.T) {
	dir := testDir(t)
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	if err := CheckDir(dir); !errors.Is(err, ErrDirNotPrepared) {
		t.Fatalf("CheckDir(shared) = %v, want ErrDirNotPrepared", err)
	}
	if err := PrepareDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := CheckDir(dir); err != nil {
		t.Fatalf("after PrepareDir: %v", err)
	}
}

func TestCreateDelete(t *testing.T) {
	dir := testDir(t)
	path := filepath.Join(dir, "net")
	if err := Create(path); err != nil {
		t.Fatal(err)
	}
	if !IsNSFile(path) {
		t.Fatal("created file is not a live namespace")
	}
	if inode(t, path) == inode(t, "/proc/self/ns/net") {
		t.Fatal("created namespace is the caller's")
	}
	if err := Create(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Create = %v, want ErrExist", err)
	}
	if !IsNSFile(path) {
		t.Fatal("failed second Create damaged the first")
	}
	if err := Delete(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file still there after Delete: %v", err)
	}
	if err := Delete(path); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

func TestDeleteStaleFile(t *testing.T) {
	path := filepath.Join(testDir(t), "stale")
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if IsNSFile(path) {
		t.Fatal("empty file reported as a namespace")
	}
	if err := Delete(path); err != nil {
		t.Fatal(err)
	}
}

func TestCreateRollsBack(t *testing.T) {
	dir := testDir(t)
	path := filepath.Join(dir, "net")
	boom := errors.New("injected")
	testHookAfterBind = func() error { return boom }
	defer func() { testHookAfterBind = nil }()
	if err := Create(path); !errors.Is(err, boom) {
		t.Fatalf("Create = %v, want injected error", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file left after failed Create: %v", err)
	}
	if ms, _ := MountedUnder(path); len(ms) > 0 {
		t.Fatalf("mount left after failed Create: %v", ms)
	}
}

func TestDo(t *testing.T) {
	path := testNS(t)
	target := inode(t, path)
	var links []string
	err := Do(path, func() error {
		if got := threadNetIno(t); got != target {
			t.Errorf("inside Do: thread in netns %d, want %d", got, target)
		}
		ls, err := netlink.LinkList()
		for _, l := range ls {
			links = append(links, l.Attrs().Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(links, []string{"lo"}) {
		t.Fatalf("links in new netns = %v, want [lo]", links)
	}
	boom := errors.New("fn failed")
	if err := Do(path, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Do = %v, want fn's error", err)
	}
	if err := Do(filepath.Join(filepath.Dir(path), "missing"), func() error { return nil }); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Do(missing) = %v, want ErrNotExist", err)
	}
}

// Do must never leave the caller's thread, or any pooled thread, in the
// target namespace.
func TestDoLeavesThreadsInOriginalNS(t *testing.T) {
	path := testNS(t)
	target := inode(t, path)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNetIno(t)
	for i := range 50 {
		_ = Do(path, func() error {
			if i%2 == 0 {
				return errors.New("odd")
			}
			return nil
		})
	}
	if after := threadNetIno(t); after != before {
		t.Fatalf("caller's thread moved from netns %d to %d", before, after)
	}
	if in := tasksIn(t, target); len(in) > 0 {
		t.Fatalf("threads %v left in the target netns", in)
	}
}

// When switching back fails the thread must be discarded, not reused.
func TestDoDiscardsThreadWhenSwitchBackFails(t *testing.T) {
	path := testNS(t)
	target := inode(t, path)
	testHookBeforeReturn = func() error { return errors.New("injected setns failure") }
	err := Do(path, func() error { return nil })
	testHookBeforeReturn = nil
	if err == nil {
		t.Fatal("Do succeeded despite failed switch back")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(tasksIn(t, target)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("thread in the target netns was not discarded: %v (pid %d)", tasksIn(t, target), os.Getpid())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewHandle(t *testing.T) {
	path := testNS(t)
	h, err := NewHandle(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	const name = "tether-test0" // the namespace is fresh, so no clash
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName(name); err != nil {
		t.Fatalf("link not in the namespace: %v", err)
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Fatalf("link %q appeared in the caller's namespace", name)
	}
}

func TestOpen(t *testing.T) {
	path := testNS(t)
	h, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil || st.Ino != inode(t, path) {
		t.Fatalf("handle ino %d (%v), want %d", st.Ino, err, inode(t, path))
	}
}

func TestBindProcNS(t *testing.T) {
	dir := testDir(t)
	path := filepath.Join(dir, "uts")
	if err := BindProcNS(os.Getpid(), "uts", path); err != nil {
		t.Fatal(err)
	}
	if inode(t, path) != inode(t, "/proc/self/ns/uts") {
		t.Fatal("bound file is not our uts namespace")
	}
	if err := BindProcNS(os.Getpid(), "uts", path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second bind = %v, want ErrExist", err)
	}
	if err := Delete(path); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkCreateDelete(b *testing.B) {
	dir := testDir(b)
	path := filepath.Join(dir, "net")
	for b.Loop() {
		if err := Create(path); err != nil {
			b.Fatal(err)
		}
		if err := Delete(path); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDoNeverUsesMainThread(t *testing.T) {
	path := testNS(t)
	for range 200 {
		err := Do(path, func() error {
			if unix.Gettid() == unix.Getpid() {
				return errors.New("fn ran on the main thread")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
