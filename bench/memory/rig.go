package memory

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/testutil"
)

// Kind is a kind of sandbox the benchmark makes N of.
type Kind struct {
	Name    string
	Network string // "" = the daemon's default network
	Process bool   // a detached main process (sleep)
}

// Kinds are the three kinds measured (package comment).
var Kinds = []Kind{
	{Name: "run", Network: "bench", Process: true},
	{Name: "run-default", Process: true},
	{Name: "bare", Network: "bench"},
}

// rig is one daemon under measurement, driven over its unix socket.
type rig struct {
	d   *testutil.Daemon
	pid int
	c   *http.Client
}

// startRig starts a daemon (binary bin, "" = the tree's) with -D in a new
// namespace and creates the network "bench".
func startRig(tb testing.TB, bin string) *rig {
	tb.Helper()
	ns := testutil.NetNS(tb, "t19f-mem")
	d := testutil.NewDaemon(tb, ns, "-D")
	if bin != "" {
		d.Bin = bin
	}
	if err := d.Start(); err != nil {
		tb.Fatal(err)
	}
	d.MustTether("network", "create", "--subnet", "10.124.0.0/16", "bench")
	b, err := os.ReadFile(filepath.Join(d.Dir, "tether.pid"))
	if err != nil {
		tb.Fatalf("daemon pidfile: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		tb.Fatalf("daemon pidfile: %v", err)
	}
	c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		},
	}}
	return &rig{d: d, pid: pid, c: c}
}

func (r *rig) call(method, path string, body any) (int, []byte, error) {
	var js []byte
	if body != nil {
		var err error
		if js, err = json.Marshal(body); err != nil {
			return 0, nil, err
		}
	}
	return attach.Call(r.c, method, path, js)
}

func (r *rig) expect(want int, method, path string, body any) ([]byte, error) {
	code, out, err := r.call(method, path, body)
	if err != nil {
		return nil, err
	}
	if code != want {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, code, bytes.TrimSpace(out))
	}
	return out, nil
}

// add makes sandbox name of kind k, as `tether run -d` does when k has a
// process: create, then a detached main process.
func (r *rig) add(k Kind, name string) error {
	req := types.SandboxCreateRequest{Name: name}
	if k.Network != "" {
		req.Networks = []types.NetworkAttach{{Network: k.Network}}
	}
	if _, err := r.expect(http.StatusCreated, http.MethodPost, "/tether/v1/sandboxes", req); err != nil {
		return err
	}
	if !k.Process {
		return nil
	}
	out, err := r.expect(http.StatusCreated, http.MethodPost, "/tether/v1/sandboxes/"+name+"/exec",
		types.ExecRequest{Cmd: []string{"sleep", "1000000"}, Detach: true, Main: true})
	if err != nil {
		return err
	}
	var x types.ExecResponse
	if err := json.Unmarshal(out, &x); err != nil || x.Pid <= 0 {
		return fmt.Errorf("exec in %q: answer %s: %v", name, out, err)
	}
	return nil
}

func (r *rig) remove(name string) error {
	_, err := r.expect(http.StatusNoContent, http.MethodDelete, "/tether/v1/sandboxes/"+name+"?force=1", nil)
	return err
}

// Snapshot is the daemon's memory at one point.
type Snapshot struct {
	Sandboxes int   `json:"sandboxes"`
	RSSKiB    int64 `json:"rss_kib"`
	// RSSBeforeGCKiB is VmRSS before the forced collections.
	RSSBeforeGCKiB int64 `json:"rss_before_gc_kib"`
	RSSAnonKiB     int64 `json:"rss_anon_kib"`
	RSSFileKiB     int64 `json:"rss_file_kib"`
	Threads        int   `json:"threads"`
	// ThreadWait counts the daemon's threads by what they wait in
	// (/proc/PID/task/*/wchan: do_wait = waitid/wait4 on a child).
	ThreadWait map[string]int `json:"thread_wait"`
	Goroutines int            `json:"goroutines"`
	FDs        int            `json:"fds"`
	// runtime.MemStats, KiB.
	HeapInuseKiB    int64 `json:"heap_inuse_kib"`
	HeapAllocKiB    int64 `json:"heap_alloc_kib"`
	HeapIdleKiB     int64 `json:"heap_idle_kib"`
	HeapReleasedKiB int64 `json:"heap_released_kib"`
	StackInuseKiB   int64 `json:"stack_inuse_kib"`
	StackSysKiB     int64 `json:"stack_sys_kib"`
	MSpanInuseKiB   int64 `json:"mspan_inuse_kib"`
	OtherSysKiB     int64 `json:"other_sys_kib"`
	SysKiB          int64 `json:"sys_kib"`
	// StoreKiB is the size of the data root's files (the bolt store).
	StoreKiB int64 `json:"store_kib"`
}

// snapshot forces two collections, waits a second and reads the figures.
func (r *rig) snapshot(n int) (Snapshot, error) {
	s := Snapshot{Sandboxes: n}
	var pre Snapshot
	if err := readStatus(r.pid, &pre); err != nil {
		return s, err
	}
	s.RSSBeforeGCKiB = pre.RSSKiB
	for range 2 {
		if _, err := r.expect(http.StatusOK, http.MethodGet, "/debug/pprof/heap?gc=1", nil); err != nil {
			return s, fmt.Errorf("force a collection (the daemon runs with -D): %w", err)
		}
	}
	time.Sleep(time.Second)
	if err := r.memstats(&s); err != nil {
		return s, err
	}
	g, err := r.goroutines()
	if err != nil {
		return s, err
	}
	s.Goroutines = g
	if err := readStatus(r.pid, &s); err != nil {
		return s, err
	}
	s.ThreadWait = threadWaits(r.pid)
	if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", r.pid)); err == nil {
		s.FDs = len(fds)
	}
	s.StoreKiB = dirKiB(filepath.Join(r.d.Dir, "data"))
	return s, nil
}

func (r *rig) memstats(s *Snapshot) error {
	out, err := r.expect(http.StatusOK, http.MethodGet, "/debug/vars", nil)
	if err != nil {
		return err
	}
	var v struct {
		MemStats struct {
			HeapInuse, HeapAlloc, HeapIdle, HeapReleased, StackInuse, StackSys, MSpanInuse, OtherSys, Sys int64
		} `json:"memstats"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return fmt.Errorf("decode /debug/vars: %w", err)
	}
	m := v.MemStats
	s.HeapInuseKiB, s.HeapAllocKiB, s.HeapIdleKiB, s.HeapReleasedKiB = m.HeapInuse/1024, m.HeapAlloc/1024, m.HeapIdle/1024, m.HeapReleased/1024
	s.StackInuseKiB, s.StackSysKiB, s.MSpanInuseKiB, s.OtherSysKiB, s.SysKiB = m.StackInuse/1024, m.StackSys/1024, m.MSpanInuse/1024, m.OtherSys/1024, m.Sys/1024
	return nil
}

// goroutines reads the total from the goroutine profile's first line.
func (r *rig) goroutines() (int, error) {
	out, err := r.expect(http.StatusOK, http.MethodGet, "/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		return 0, err
	}
	first, _, _ := bytes.Cut(out, []byte("\n"))
	n, ok := strings.CutPrefix(string(first), "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("goroutine profile starts %q", first)
	}
	return strconv.Atoi(n)
}

// saveHeap writes the daemon's heap profile (after a collection) to path.
func (r *rig) saveHeap(path string) error {
	out, err := r.expect(http.StatusOK, http.MethodGet, "/debug/pprof/heap?gc=1", nil)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}

// GoroutineGroups counts goroutines by where they wait: the first frame
// outside the runtime and the standard library's poller, with its caller.
func (r *rig) goroutineGroups() (map[string]int, error) {
	out, err := r.expect(http.StatusOK, http.MethodGet, "/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		return nil, err
	}
	return groupGoroutines(string(out)), nil
}

func groupGoroutines(profile string) map[string]int {
	groups := map[string]int{}
	_, profile, _ = strings.Cut(profile, "\n") // "goroutine profile: total N"
	for _, rec := range strings.Split(profile, "\n\n") {
		head, body, _ := strings.Cut(rec, "\n")
		cnt, _, ok := strings.Cut(head, " @ ")
		n, err := strconv.Atoi(cnt)
		if !ok || err != nil {
			continue
		}
		var frames []string
		for _, l := range strings.Split(body, "\n") {
			f := strings.Fields(l)
			if len(f) < 3 || f[0] != "#" {
				continue
			}
			fn, _, _ := strings.Cut(f[2], "+0x")
			if !boring(fn) {
				frames = append(frames, fn)
			}
		}
		key := strings.Join(frames[:min(len(frames), 2)], " < ")
		groups[key] += n
	}
	return groups
}

func boring(fn string) bool {
	for _, p := range []string{"runtime.", "internal/poll.", "syscall.", "os.", "sync.", "internal/", "net.", "golang.org/x/sys/"} {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}

func readStatus(pid int, s *Snapshot) error {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err
	}
	defer f.Close()
	kib := func(v string) int64 {
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		return n
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		switch k {
		case "VmRSS":
			s.RSSKiB = kib(v)
		case "RssAnon":
			s.RSSAnonKiB = kib(v)
		case "RssFile":
			s.RSSFileKiB = kib(v)
		case "Threads":
			s.Threads = int(kib(v))
		}
	}
	if s.RSSKiB == 0 {
		return fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return sc.Err()
}

func threadWaits(pid int) map[string]int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	w := map[string]int{}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/wchan", pid, t.Name()))
		if err != nil {
			continue
		}
		name := string(b)
		if name == "" || name == "0" {
			name = "running"
		}
		w[name]++
	}
	return w
}

func dirKiB(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	return total / 1024
}

// steps are the sandbox counts measured on the way to n: 50, 200, 400 for
// n = 400, n alone when it is below 50.
func steps(n int) []int {
	var s []int
	for _, v := range []int{50, 200, 400, 1000} {
		if v < n {
			s = append(s, v)
		}
	}
	return slices.Compact(append(s, n))
}
