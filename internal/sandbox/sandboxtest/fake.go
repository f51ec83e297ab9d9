// Package sandboxtest is a fake of sandbox.Namespaces: namespaces are
// entries in memory, so the engine's sandbox logic runs in unit tests
// without root.
package sandboxtest

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/sandbox"
)

// Namespaces is the fake. Its zero value is ready.
type Namespaces struct {
	mu    sync.Mutex
	files map[string]netns.ID // namespace files (bind mounts) by path
	procs map[int]netns.ID    // processes and the namespace each is in
	links map[netns.ID][]string
	next  uint64
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
	}
}

func (f *Namespaces) PrepareDir(string) error { return nil }

func (f *Namespaces) Create(path string) (netns.ID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	if _, ok := f.files[path]; ok {
		return netns.ID{}, fmt.Errorf("create %s: %w", path, fs.ErrExist)
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
	cb := f.OnDelete
	f.mu.Unlock()
	if had && cb != nil {
		cb(path)
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
	id, ok := f.procs[pid]
	if !ok {
		// A process the fake was not told of (the daemon's own, binding
		// the host namespace): it gets a namespace of its own.
		f.next++
		id = netns.ID{Dev: 4, Ino: 0x1000 + f.next}
		f.procs[pid] = id
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

func (f *Namespaces) RemoveStrayLinks(path string, keep func(string) bool) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	id, ok := f.files[path]
	if !ok {
		return nil, fmt.Errorf("%s: %w", path, ErrNotNS)
	}
	var kept, removed []string
	for _, l := range f.links[id] {
		if keep(l) {
			kept = append(kept, l)
		} else {
			removed = append(removed, l)
		}
	}
	f.links[id] = kept
	return removed, nil
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

// Files lists the namespace files, sorted.
func (f *Namespaces) Files() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.files))
}
