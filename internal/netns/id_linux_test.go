package netns

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// IDOf names a namespace the same through its file and through the /proc
// link of a process in it, and refuses a file that is not a namespace.
func TestIDOf(t *testing.T) {
	path := testNS(t)
	id, err := IDOf(path)
	if err != nil || id.IsZero() {
		t.Fatalf("IDOf(%q) = %v, %v", path, id, err)
	}
	var inside ID
	if err := Do(path, func() error {
		var err error
		inside, err = IDOf(threadNSPath("net"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside != id {
		t.Fatalf("the thread inside sees %v, the file is %v", inside, id)
	}
	own, err := IDOf("/proc/self/ns/net")
	if err != nil || own == id {
		t.Fatalf("own namespace %v (%v) equals the new one %v", own, err, id)
	}
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := IDOf(plain); err == nil {
		t.Fatal("IDOf of a regular file succeeded")
	}
}

// FindProcessIn finds a process by the namespace it is in, and nothing once
// that process is gone.
func TestFindProcessIn(t *testing.T) {
	path := testNS(t)
	id, err := IDOf(path)
	if err != nil {
		t.Fatal(err)
	}
	if pid := FindProcessIn("net", id); pid != 0 {
		t.Fatalf("found pid %d in a namespace no process is in", pid)
	}
	cmd := exec.Command("nsenter", "--net="+path, "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(5 * time.Second)
	for FindProcessIn("net", id) != cmd.Process.Pid {
		if time.Now().After(deadline) {
			t.Fatalf("process %d in %v not found", cmd.Process.Pid, id)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if pid := FindProcessIn("net", id); pid != 0 {
		t.Fatalf("found pid %d after the only process exited", pid)
	}
}

// The kernel's loop check (fs/namespace.c, mnt_ns_loop): a mount namespace's
// file can be bound only by a process whose own mount namespace is older
// (has a smaller sequence number), so binding one's own always fails with
// EINVAL. This is why Tether never persists a sandbox's mount namespace in a
// file (docs/sandboxes.md); a network namespace has no such rule.
func TestMountNamespaceFileLoopCheck(t *testing.T) {
	dir := testDir(t)
	own := filepath.Join(dir, "own-mnt")
	err := BindProcNS(os.Getpid(), "mnt", own)
	if !errors.Is(err, unix.EINVAL) {
		t.Fatalf("binding our own mount namespace: %v, want EINVAL", err)
	}
	if _, serr := os.Lstat(own); serr == nil {
		t.Fatal("a failed bind left its file behind")
	}
	// A child's newer namespace binds only when its id is larger than ours;
	// the kernel hands ids out in per-CPU batches, so "newer" is not
	// "created later". Either outcome is allowed; EINVAL is the only error.
	child := exec.Command("unshare", "-m", "sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		a, _ := IDOf("/proc/self/ns/mnt")
		b, _ := IDOf("/proc/" + strconv.Itoa(child.Process.Pid) + "/ns/mnt")
		if a != b {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare -m did not switch namespaces")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p := filepath.Join(dir, "child-mnt")
	if err := BindProcNS(child.Process.Pid, "mnt", p); err != nil && !errors.Is(err, unix.EINVAL) {
		t.Fatalf("binding a child's mount namespace: %v", err)
	} else if err == nil {
		if err := Delete(p); err != nil {
			t.Fatal(err)
		}
	}
	// A network namespace binds whatever its age: the loop check is for
	// mount namespaces only.
	net := filepath.Join(dir, "own-net")
	if err := BindProcNS(os.Getpid(), "net", net); err != nil {
		t.Fatalf("binding our own network namespace: %v", err)
	}
	if err := Delete(net); err != nil {
		t.Fatal(err)
	}
}

// A namespace just made is never the initial one; where the kernel tells
// (PID 1 readable, or fixed initial inodes), the test process's own mount
// namespace is told apart from a new one.
func TestIsInitial(t *testing.T) {
	id, err := IDOf(testNS(t))
	if err != nil {
		t.Fatal(err)
	}
	if initial, _ := IsInitial("net", id); initial {
		t.Fatalf("a new network namespace %v taken for the initial one", id)
	}
	if _, known := IsInitial("uts", id); known {
		t.Fatal("IsInitial claims to know about uts namespaces")
	}
	child := exec.Command("unshare", "-m", "sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	own, err := IDOf("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		other, err := IDOf(ProcNSPath(child.Process.Pid, "mnt"))
		if err == nil && other != own {
			if initial, _ := IsInitial("mnt", other); initial {
				t.Fatalf("unshare -m's new mount namespace %v taken for the initial one", other)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare -m did not switch namespaces")
		}
	}
	if initial, known := IsInitial("mnt", own); known {
		t.Logf("the test's own mount namespace %v: initial=%v", own, initial)
	}
}
