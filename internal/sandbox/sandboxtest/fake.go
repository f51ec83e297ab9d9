// Package sandboxtest is a fake of sandbox.Namespaces: namespaces are
// entries in memory, so the engine's sandbox logic runs in unit tests
// without root. In a directory made with PrepareDir each namespace file
// also appears as an empty plain file (where the kernel shows its bind
// mount), so code that lists the directory (garbage collection) sees the
// same names; Delete removes a plain file there as the kernel's unmount
// and remove would.
package sandboxtest

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/sandbox"
)

// Namespaces is the fake. Its zero value is ready.
type Namespaces struct {
	mu    sync.Mutex
	files map[string]netns.ID // namespace files (bind mounts) by path
	procs map[int]netns.ID    // processes and the namespace each is in
	links map[netns.ID][]string
	dirs  map[string]bool // prepared directories, where files are mirrored
	// bindErr: BindProc at these paths fails (FailBindAt).
	bindErr map[string]error
	next    uint64
	// OnDelete, when set, is told of every namespace file deleted (a fake
	// driver's TeardownNamespace, say).
	OnDelete func(path string)
}

var _ sandbox.Namespaces = (*Namespaces)(nil)

// ErrNotNS is returned for a path that is no namespace file.
var ErrNotNS = errors.New("not a namespace file")

func (f *Namespaces) init() {
	if f.files == nil {
		f.files, f.procs, f.links = map[string]netns.ID{}, map[int]netns.ID{}, map[netns.ID][]string{}
		f.dirs, f.bindErr = map[string]bool{}, map[string]error{}
	}
}

// PrepareDir makes dir (a plain directory: no mount) and mirrors the
// namespace files made in it from now on.
func (f *Namespaces) PrepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	f.dirs[filepath.Clean(dir)] = true
	return nil
}

// mirror creates the plain file of a namespace file in a prepared
// directory. Called with f.mu held.
func (f *Namespaces) mirror(path string) error {
	if !f.dirs[filepath.Dir(filepath.Clean(path))] {
		return nil
	}
	return os.WriteFile(path, nil, 0o600)
}

// unmirror removes the plain file at path in a prepared directory, if
// any. Called with f.mu held.
func (f *Namespaces) unmirror(path string) error {
	if !f.dirs[filepath.Dir(filepath.Clean(path))] {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (f *Namespaces) Create(path string) (netns.ID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	if _, ok := f.files[path]; ok {
		return netns.ID{}, fmt.Errorf("create %s: %w", path, fs.ErrExist)
	}
	if err := f.mirror(path); err != nil {
		return netns.ID{}, fmt.Errorf("create %s: %w", path, err)
	}
	f.next++
	id := netns.ID{Dev: 4, Ino: 0x1000 + f.next}
	f.files[path] = id
	return id, nil
}

func (f *Namespaces) Delete(path string) error {
	f.mu.Lock()
	f.init()
	_, had := f.files[path]
	delete(f.files, path)
	err := f.unmirror(path)
	cb := f.OnDelete
	f.mu.Unlock()
	if had && cb != nil {
		cb(path)
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", path, err)
	}
	return nil
}

func (f *Namespaces) IDOf(path string) (netns.ID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	if pid, ok := procPID(path); ok {
		if id, ok := f.procs[pid]; ok {
			return id, nil
		}
		return netns.ID{}, fmt.Errorf("%s: %w", path, fs.ErrNotExist)
	}
	if id, ok := f.files[path]; ok {
		return id, nil
	}
	return netns.ID{}, fmt.Errorf("%s: %w", path, ErrNotNS)
}

func (f *Namespaces) IsNSFile(path string) bool {
	_, err := f.IDOf(path)
	return err == nil
}

func (f *Namespaces) BindProc(pid int, path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	if err := f.bindErr[path]; err != nil {
		return fmt.Errorf("bind %s: %w", path, err)
	}
	id, ok := f.procs[pid]
	if !ok {
		// A process the fake was not told of (the daemon's own, binding
		// the host namespace): it gets a namespace of its own.
		f.next++
		id = netns.ID{Dev: 4, Ino: 0x1000 + f.next}
		f.procs[pid] = id
	}
	if err := f.mirror(path); err != nil {
		return fmt.Errorf("bind %s: %w", path, err)
	}
	f.files[path] = id
	return nil
}

func (f *Namespaces) ProcPath(pid int) string { return "/proc/" + strconv.Itoa(pid) + "/ns/net" }

func procPID(path string) (int, bool) {
	rest, ok := strings.CutPrefix(path, "/proc/")
	if !ok {
		return 0, false
	}
	n, ok := strings.CutSuffix(rest, "/ns/net")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(n)
	return pid, err == nil
}

func (f *Namespaces) FindProcessIn(id netns.ID) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	for _, pid := range slices.Sorted(maps.Keys(f.procs)) {
		if f.procs[pid] == id {
			return pid
		}
	}
	return 0
}

// RemoveStrayLinks removes the veths AddLink put in the namespace that keep
// refuses; the listing it returns holds the ones kept (the fake drivers
// keep their endpoints' interfaces themselves and ignore it).
func (f *Namespaces) RemoveStrayLinks(path string, keep func(string) bool) (map[string]driver.SandboxLink, []string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	id, ok := f.files[path]
	if !ok {
		return nil, nil, fmt.Errorf("%s: %w", path, ErrNotNS)
	}
	var kept, removed []string
	listing := map[string]driver.SandboxLink{}
	for _, l := range f.links[id] {
		if keep(l) {
			kept = append(kept, l)
			listing[l] = driver.SandboxLink{Name: l, Veth: true}
		} else {
			removed = append(removed, l)
		}
	}
	f.links[id] = kept
	slices.Sort(removed) // as the kernel's
	return listing, removed, nil
}

// AddProcess puts a process in the namespace of the file at path (a
// process that keeps it alive when the file is lost).
func (f *Namespaces) AddProcess(pid int, path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	id, ok := f.files[path]
	if !ok {
		return fmt.Errorf("%s: %w", path, ErrNotNS)
	}
	f.procs[pid] = id
	return nil
}

// LoseFile drops a namespace file while the namespace lives on (a mount
// namespace that went with a restart), without OnDelete.
func (f *Namespaces) LoseFile(path string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	delete(f.files, path)
	_ = f.unmirror(path) // a test's temporary directory
}

// FailBindAt makes BindProc at path fail with err (nil: succeed again),
// as a bind mount refused in a read-only exec-root.
func (f *Namespaces) FailBindAt(path string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	if err == nil {
		delete(f.bindErr, path)
		return
	}
	f.bindErr[path] = err
}

// AddLink puts a veth named name in the namespace at path.
func (f *Namespaces) AddLink(path, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	id, ok := f.files[path]
	if !ok {
		return fmt.Errorf("%s: %w", path, ErrNotNS)
	}
	f.links[id] = append(f.links[id], name)
	return nil
}

// Links lists the veths in the namespace at path, in the order added (nil
// for a path that is no namespace file).
func (f *Namespaces) Links(path string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	id, ok := f.files[path]
	if !ok {
		return nil
	}
	return slices.Clone(f.links[id])
}

// Files lists the namespace files, sorted.
func (f *Namespaces) Files() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.files))
}
