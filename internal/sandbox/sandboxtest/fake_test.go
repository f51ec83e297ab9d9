package sandboxtest

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Namespace files appear in a prepared directory as the kernel's bind
// mounts do, and go with Delete, which tells OnDelete.
func TestFilesMirrored(t *testing.T) {
	var deleted []string
	f := &Namespaces{OnDelete: func(p string) { deleted = append(deleted, p) }}
	dir := filepath.Join(t.TempDir(), "ns")
	if err := f.PrepareDir(dir); err != nil {
		t.Fatal(err)
	}
	a, b := filepath.Join(dir, "a.net"), filepath.Join(dir, "b.net")
	outside := filepath.Join(t.TempDir(), "other")
	for _, p := range []string{a, b, outside} {
		if _, err := f.Create(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Create(a); err == nil {
		t.Fatal("created a namespace file twice")
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{"a.net", "b.net"}) {
		t.Fatalf("directory holds %v", got)
	}
	if _, err := os.Stat(outside); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file outside a prepared directory was written: %v", err)
	}
	stray := filepath.Join(dir, "stray")
	if err := os.WriteFile(stray, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{a, stray, a} {
		if err := f.Delete(p); err != nil {
			t.Fatal(err)
		}
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{"b.net"}) {
		t.Fatalf("directory holds %v after deletes", got)
	}
	if !slices.Equal(deleted, []string{a}) {
		t.Fatalf("OnDelete told of %v, want only the namespace deleted", deleted)
	}
	f.LoseFile(b)
	if got := listDir(t, dir); len(got) != 0 || f.IsNSFile(b) {
		t.Fatalf("lost file still there: %v", got)
	}
}

// A process keeps a namespace whose file was lost; binding it again from
// the process gives the same identity.
func TestProcessKeepsNamespace(t *testing.T) {
	f := &Namespaces{}
	id, err := f.Create("/run/x.net")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.AddProcess(77, "/run/x.net"); err != nil {
		t.Fatal(err)
	}
	f.LoseFile("/run/x.net")
	if _, err := f.IDOf("/run/x.net"); !errors.Is(err, ErrNotNS) {
		t.Fatalf("lost file: %v", err)
	}
	if pid := f.FindProcessIn(id); pid != 77 {
		t.Fatalf("process in the namespace: %d", pid)
	}
	if got, err := f.IDOf(f.ProcPath(77)); err != nil || got != id {
		t.Fatalf("IDOf(%s) = %v, %v", f.ProcPath(77), got, err)
	}
	f.FailBindAt("/run/x.net", errors.New("read-only file system"))
	if err := f.BindProc(77, "/run/x.net"); err == nil || f.IsNSFile("/run/x.net") {
		t.Fatalf("bind that should fail: %v", err)
	}
	f.FailBindAt("/run/x.net", nil)
	if err := f.BindProc(77, "/run/x.net"); err != nil {
		t.Fatal(err)
	}
	if got, err := f.IDOf("/run/x.net"); err != nil || got != id {
		t.Fatalf("rebound: %v, %v; want %v", got, err, id)
	}
	// A process the fake was not told of has a namespace of its own.
	if err := f.BindProc(1234, "/run/host.net"); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.IDOf("/run/host.net"); got == id {
		t.Fatal("an unknown process shares the sandbox's namespace")
	}
}

func TestRemoveStrayLinks(t *testing.T) {
	f := &Namespaces{}
	if _, err := f.Create("/run/x.net"); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"eth0", "tmp1", "eth1"} {
		if err := f.AddLink("/run/x.net", l); err != nil {
			t.Fatal(err)
		}
	}
	kept, removed, err := f.RemoveStrayLinks("/run/x.net", func(n string) bool { return n == "eth0" })
	if _, ok := kept["eth0"]; !ok || len(kept) != 1 {
		t.Errorf("kept %v, want eth0 only", kept)
	}
	if err != nil || !slices.Equal(removed, []string{"eth1", "tmp1"}) {
		t.Fatalf("removed %v, %v", removed, err)
	}
	if got := f.Links("/run/x.net"); !slices.Equal(got, []string{"eth0"}) {
		t.Fatalf("links %v", got)
	}
	if _, _, err := f.RemoveStrayLinks("/run/none.net", nil); err == nil {
		t.Fatal("links removed from a namespace that does not exist")
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}
