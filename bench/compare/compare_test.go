package compare

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/bench/docker"
	"github.com/tether-net/tether/internal/testutil"
	"github.com/tether-net/tether/internal/testutil/stats"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinary()
	os.Exit(code)
}

const (
	hostBase = 20000 // binding i: host 0.0.0.0:20000+i -> container 10000+i
	ctrBase  = 10000
)

// Options sizes one run.
type Options struct {
	Ports []int         // published ports per sandbox, one row each
	Reps  int           // repetitions per (system, N)
	Pause time.Duration // after each removal (the kernel frees namespaces in the background)
}

// Result is one system at one port count.
type Result struct {
	System   string    `json:"system"`
	Kind     string    `json:"kind"` // "api": round trips; "cli": whole commands
	N        int       `json:"ports"`
	CreateMS []float64 `json:"create_ms"`
	RemoveMS []float64 `json:"remove_ms"` // the API answer (or the command's end)
	Create   float64   `json:"create_median_ms"`
	Remove   float64   `json:"remove_median_ms"`
	// GoneMS: from the removal's start until the last of the container's
	// host-side veths was deleted (RTM_DELLINK in its host namespace);
	// CompleteMS: the later of the answer and that (Docker and Podman
	// delete the veth before they answer, Tether's namespace teardown
	// after: the like-with-like figure).
	GoneMS     []float64 `json:"links_gone_ms"`
	CompleteMS []float64 `json:"remove_complete_ms"`
	Gone       float64   `json:"links_gone_median_ms"`
	Complete   float64   `json:"remove_complete_median_ms"`
}

// Target is one of the goals at the largest port count.
type Target struct {
	Name  string  `json:"name"`
	Ratio float64 `json:"ratio"` // Docker ÷ Tether
	Want  float64 `json:"want_at_least"`
	Met   bool    `json:"met"`
}

// Report is the JSON written by TestPublishVsDockerReport.
type Report struct {
	Date       time.Time         `json:"date"`
	Machine    map[string]any    `json:"machine"`
	LoadBefore string            `json:"loadavg_before"`
	LoadAfter  string            `json:"loadavg_after"`
	Versions   map[string]string `json:"versions"`
	Ports      []int             `json:"ports"`
	Reps       int               `json:"reps"`
	PauseMS    int64             `json:"pause_ms"`
	// PodmanLaunchMS: `nsenter … env true` on podman's host, included in
	// every podman figure (it runs there as a command).
	PodmanLaunchMS float64  `json:"podman_launch_overhead_ms"`
	Results        []Result `json:"results"`
	Targets        []Target `json:"targets"`
}

func (r *Report) result(system string, n int) *Result {
	for i := range r.Results {
		if r.Results[i].System == system && r.Results[i].N == n {
			return &r.Results[i]
		}
	}
	return nil
}

func measure(tb testing.TB, o Options) Report {
	tb.Helper()
	refs := docker.RequireRefs(tb)
	rep := Report{Date: time.Now().UTC(), Machine: machine(), LoadBefore: testutil.LoadAvg(),
		Ports: o.Ports, Reps: o.Reps, PauseMS: o.Pause.Milliseconds()}
	tt := attach.StartTether(tb)
	dk := docker.StartDocker(tb, refs, nil)
	dknp := docker.StartDocker(tb, refs, map[string]any{"userland-proxy": false})
	pm := docker.StartPodman(tb, refs)
	rep.Versions = versions(dk, pm)
	var over []time.Duration
	for range 5 {
		over = append(over, pm.LaunchOverhead())
	}
	rep.PodmanLaunchMS = attach.Summarize(over).P50
	sys := systems(tt, dk, dknp, pm)
	watch := map[string]*attach.LinkWatch{} // by namespace, subscribed before any removal
	for _, s := range sys {
		if watch[s.ns] == nil {
			watch[s.ns] = attach.WatchLinksT(tb, "/run/netns/"+s.ns)
		}
	}
	for _, s := range sys {
		for _, n := range o.Ports {
			rep.Results = append(rep.Results, Result{System: s.name, Kind: s.kind, N: n})
		}
		// warm-up (not recorded): first container, first image use
		once(tb, s, watch[s.ns], "warm-"+short(s.name), 1, nil)
	}
	k := 0
	for r := range o.Reps {
		for _, n := range o.Ports {
			for j := range sys {
				s := sys[(k+j)%len(sys)]
				res := rep.result(s.name, n)
				once(tb, s, watch[s.ns], fmt.Sprintf("%s-%d-%d", short(s.name), n, r), n, res)
				time.Sleep(o.Pause)
			}
			k++
		}
	}
	for i := range rep.Results {
		res := &rep.Results[i]
		res.Create, res.Remove = stats.Median(res.CreateMS), stats.Median(res.RemoveMS)
		res.Gone, res.Complete = stats.Median(res.GoneMS), stats.Median(res.CompleteMS)
	}
	top := slices.Max(o.Ports)
	t, d := rep.result(sysTether, top), rep.result(sysDocker, top)
	for _, g := range []struct {
		name       string
		dock, teth float64
		want       float64
	}{
		{fmt.Sprintf("create with %d ports: Docker ÷ Tether", top), d.Create, t.Create, 50},
		{fmt.Sprintf("remove with %d ports (answer and links gone): Docker ÷ Tether", top), d.Complete, t.Complete, 20},
	} {
		ratio := ratio(g.dock, g.teth)
		rep.Targets = append(rep.Targets, Target{Name: g.name, Ratio: ratio, Want: g.want, Met: ratio >= g.want})
	}
	rep.LoadAfter = testutil.LoadAvg()
	return rep
}

// once creates, checks and removes one sandbox/container with n ports,
// recording the times in res (nil: warm-up). The container's host-side
// veths are the ones its create added to the system's namespace (nothing
// else runs there meanwhile); after the removal's answer once waits for
// their deletion events on w.
func once(tb testing.TB, s system, w *attach.LinkWatch, name string, n int, res *Result) {
	tb.Helper()
	before, err := w.Veths()
	if err != nil {
		tb.Fatal(err)
	}
	id, took, err := s.create(name, docker.Bindings(n, hostBase, ctrBase))
	if err != nil {
		tb.Fatalf("%s: %v", s.name, err)
	}
	if err := s.check(id, n); err != nil {
		tb.Fatalf("%s: %v", s.name, err)
	}
	after, err := w.Veths()
	if err != nil {
		tb.Fatal(err)
	}
	links := attach.NewVeths(before, after)
	if len(links) == 0 {
		tb.Fatalf("%s: creating %s added no veth to %s", s.name, name, s.ns)
	}
	start := time.Now()
	rm, err := s.remove(id)
	if err != nil {
		tb.Fatalf("%s: %v", s.name, err)
	}
	gone, err := w.WaitGone(links, start, attach.GoneTimeout)
	if err != nil {
		tb.Fatalf("%s: removal of %s: %v", s.name, name, err)
	}
	if res != nil {
		res.CreateMS = append(res.CreateMS, msf(took))
		res.RemoveMS = append(res.RemoveMS, msf(rm))
		res.GoneMS = append(res.GoneMS, msf(gone))
		res.CompleteMS = append(res.CompleteMS, msf(max(rm, gone)))
	}
}

// short turns a row name into a container-name prefix.
func short(system string) string {
	r := strings.NewReplacer(" ", "", ",", "", "-", "")
	return strings.ToLower(r.Replace(system))
}

// versions collects what the report names: every engine's and tool's version.
func versions(dk *docker.Docker, pm *docker.Podman) map[string]string {
	v := map[string]string{"dockerd": dk.Version, "podman": pm.Version, "netavark": pm.Netavark}
	first := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			return ""
		}
		l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return l
	}
	v["containerd"] = first("containerd", "--version")
	v["runc"] = first("runc", "--version")
	v["conmon"] = first("conmon", "--version")
	v["iptables"] = first("iptables", "--version")
	v["nft"] = first("nft", "--version")
	if dk.Refs.DockerCLI != "" {
		v["docker-cli"] = first(dk.Refs.DockerCLI, "--version")
	}
	v["tether"] = first("git", "describe", "--always", "--dirty") // the test runs in the module
	if tv := os.Getenv("BENCH_TETHER_VERSION"); tv != "" {        // a tree exported with git archive
		v["tether"] = tv
	}
	return v
}

// TestPublishVsDockerSmoke runs scenario 7 small (0, 1 and 5 ports, once)
// so it does not rot, and checks what it measures is real: every create
// published its ports and runs its process (checked per system), a Tether
// `run -d -p` answers through the published port from outside and on the
// host's loopback, and everything is cleaned up (the engines' cleanups check
// processes, cgroups, mounts and namespaces). The engines' own traffic
// checks are bench/docker's TestDockerSmoke and TestPodmanSmoke.
func TestPublishVsDockerSmoke(t *testing.T) {
	rep := measure(t, Options{Ports: []int{0, 1, 5}, Reps: 1})
	for _, r := range rep.Results {
		if len(r.CreateMS) != 1 || len(r.RemoveMS) != 1 || len(r.GoneMS) != 1 || r.Create <= 0 || r.Remove <= 0 || r.Gone <= 0 {
			t.Errorf("incomplete result: %+v", r)
		}
	}
	if len(rep.Results) < 18 || len(rep.Targets) != 2 || rep.Versions["dockerd"] == "" || rep.Versions["podman"] == "" {
		t.Errorf("incomplete report: %+v", rep)
	}
	t.Log("\n" + table(rep))
}

// TestTetherPublishAnswers: `tether run -d -p 0.0.0.0:18080:8080` of busybox
// httpd answers from an outside namespace (uplink address, the kernel path)
// and on the daemon's host loopback (the proxy), and not after `rm -f`.
func TestTetherPublishAnswers(t *testing.T) {
	docker.RequireRefs(t) // busybox comes with the references
	tt := attach.StartTether(t)
	out := testutil.Outside(t, tt.NS)
	www := filepath.Join(t.TempDir(), "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("bench\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tt.D.MustTether("run", "-d", "--name", "web", "-p", "0.0.0.0:18080:8080", "--", "busybox", "httpd", "-f", "-p", "8080", "-h", www)
	get(t, out, testutil.UplinkAddr+":18080", true)
	get(t, tt.NS, "127.0.0.1:18080", true)
	tt.D.MustTether("rm", "-f", "web")
	get(t, out, testutil.UplinkAddr+":18080", false)
}

// get fetches http://addr/ from inside namespace ns and checks the page
// (retrying while the server starts) or, with want false, that the port no
// longer answers.
func get(t *testing.T, ns, addr string, want bool) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return testutil.DialInNS(ctx, ns, network, addr)
		},
	}}
	var body string
	var err error
	for range 50 {
		var resp *http.Response
		if resp, err = c.Get("http://" + addr + "/"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
		}
		if want && err == nil && body == "bench\n" || !want && err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	if want {
		t.Fatalf("GET http://%s/ from %s: %q, %v", addr, ns, body, err)
	}
	t.Fatalf("GET http://%s/ from %s after removal: answered %q", addr, ns, body)
}

// TestPublishVsDockerReport is the full run (BENCH_REPORT=1, bench/run.sh
// docker): BENCH_PORTS (0,1,10,50,200) × BENCH_REPS (3), BENCH_PAUSE_MS
// (300) after each removal; table on the log, JSON to BENCH_OUT.
func TestPublishVsDockerReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (bench/run.sh docker)")
	}
	ports, err := envInts("BENCH_PORTS", []int{0, 1, 10, 50, 200})
	if err != nil {
		t.Fatal(err)
	}
	rep := measure(t, Options{Ports: ports, Reps: attach.EnvInt("BENCH_REPS", 3),
		Pause: time.Duration(attach.EnvInt("BENCH_PAUSE_MS", 300)) * time.Millisecond})
	t.Log("\n" + table(rep))
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// table renders the report as markdown tables (API round trips: create,
// then remove with its answer, links gone and both; whole commands) with the
// ratios, then the targets.
func table(rep Report) string {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "%v, %v CPUs, %v, kernel %v, %v; load %s → %s; medians of %d; podman figures include %.1f ms of nsenter\n",
		m["cpu"], m["nproc"], m["memtotal"], m["kernel"], m["go"], rep.LoadBefore, rep.LoadAfter, rep.Reps, rep.PodmanLaunchMS)
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range rep.Versions {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s; ", k, rep.Versions[k])
	}
	b.WriteString("\n\n| ports | Tether create | Docker create | **Docker ÷ Tether** | Docker, no proxy | ÷ Tether | Tether w/o process: create |\n" +
		"|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, n := range rep.Ports {
		t, d, dn, np := rep.result(sysTether, n), rep.result(sysDocker, n), rep.result(sysDockerNP, n), rep.result(sysTetherNoProc, n)
		fmt.Fprintf(&b, "| %d | %.2f ms | %.1f ms | **%.0f×** | %.1f ms | %.0f× | %.2f ms |\n", n,
			t.Create, d.Create, ratio(d.Create, t.Create), dn.Create, ratio(dn.Create, t.Create), np.Create)
	}
	b.WriteString("\nRemove: API answer / links gone (host-side veth's RTM_DELLINK, from the request) / both (the later of the two," +
		" per removal). Docker deletes the veth before it answers, Tether after: **both** is like with like.\n\n" +
		"| ports | Tether: answer | links gone | **both** | Docker: answer | links gone | **both** | **Docker ÷ Tether, both** | answers only | " +
		"Docker, no proxy: both | ÷ Tether | Tether w/o process: answer | links gone | both |\n" +
		"|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, n := range rep.Ports {
		t, d, dn, np := rep.result(sysTether, n), rep.result(sysDocker, n), rep.result(sysDockerNP, n), rep.result(sysTetherNoProc, n)
		fmt.Fprintf(&b, "| %d | %.2f ms | %.2f ms | **%.2f ms** | %.1f ms | %.1f ms | **%.1f ms** | **%.1f×** | %.1f× | %.1f ms | %.1f× | %.2f ms | %.2f ms | %.2f ms |\n", n,
			t.Remove, t.Gone, t.Complete, d.Remove, d.Gone, d.Complete, ratio(d.Complete, t.Complete), ratio(d.Remove, t.Remove),
			dn.Complete, ratio(dn.Complete, t.Complete), np.Remove, np.Gone, np.Complete)
	}
	cli := []string{sysTetherCLI, sysDockerCLI, sysPodmanCLI}
	if rep.result(sysDockerCLI, rep.Ports[0]) == nil {
		cli = []string{sysTetherCLI, sysPodmanCLI}
	}
	b.WriteString("\nWhole commands; remove is the later of the command's end and the links gone (like with like).\n\n| ports |")
	for _, what := range []string{"create", "remove"} {
		for _, s := range cli {
			fmt.Fprintf(&b, " %s: %s |", s, what)
		}
		for _, s := range cli[1:] {
			fmt.Fprintf(&b, " %s ÷ tether |", strings.Fields(s)[0])
		}
	}
	b.WriteString(" tether rm -f: answer | links gone |")
	b.WriteString("\n|---:|" + strings.Repeat("---:|", 2*(2*len(cli)-1)+2) + "\n")
	for _, n := range rep.Ports {
		fmt.Fprintf(&b, "| %d |", n)
		for _, what := range []func(*Result) float64{
			func(r *Result) float64 { return r.Create }, func(r *Result) float64 { return r.Complete }} {
			base := what(rep.result(sysTetherCLI, n))
			for _, s := range cli {
				fmt.Fprintf(&b, " %.1f ms |", what(rep.result(s, n)))
			}
			for _, s := range cli[1:] {
				fmt.Fprintf(&b, " %.1f× |", ratio(what(rep.result(s, n)), base))
			}
		}
		tc := rep.result(sysTetherCLI, n)
		fmt.Fprintf(&b, " %.1f ms | %.1f ms |", tc.Remove, tc.Gone)
		b.WriteString("\n")
	}
	b.WriteString("\n")
	for _, g := range rep.Targets {
		met := "missed"
		if g.Met {
			met = "met"
		}
		fmt.Fprintf(&b, "target %s ≥ %.0f×: %.1f× (%s)\n", g.Name, g.Want, g.Ratio, met)
	}
	return b.String()
}

func envInts(name string, def []int) ([]int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > 5000 {
			return nil, fmt.Errorf("%s=%q: want port counts 0..5000, comma-separated", name, v)
		}
		out = append(out, n)
	}
	return out, nil
}

func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// machine describes the machine for the report: CPUs, CPU model, memory,
// kernel and Go version.
func machine() map[string]any {
	m := map[string]any{"nproc": runtime.NumCPU(), "go": runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			m["memtotal"] = strings.Join(strings.Fields(l)[1:], " ")
		}
	}
	return m
}
