package lifecycle

// Restore and restart figures per start mode: the daemon started with
// nsenter --net (the test's mount namespace), ip netns exec and unshare -m
// --propagation slave (a new mount namespace per start, as systemd's
// PrivateMounts= gives). Each sandbox has a running process, so that it
// survives a restart under every mode (a sandbox without one is held by
// its namespace file only, and under the last two modes that file lives
// in the daemon's mount namespace, which dies with the daemon). Nothing
// here opens a sandbox's NetNS path: under those modes it is not visible
// from the test; /proc/PID/ns/net of the sandbox's process is.

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/testutil"
)

// ModeReport is one start mode's part of the report.
type ModeReport struct {
	Mode      testutil.StartMode `json:"mode"`
	Sandboxes int                `json:"sandboxes"` // each with one running process (sleep)
	// RestoreIdle: the engine's restore time ("engine ready" took=) with no
	// sandbox; RestoreFull: the same daemon with Sandboxes.
	RestoreIdle attach.Stats `json:"restore_idle"`
	RestoreFull attach.Stats `json:"restore_full"`
	RatioP50    float64      `json:"restore_ratio_p50"`
	// RestoredMin: the fewest sandboxes the engine reported at a start
	// ("engine ready" sandboxes=) over the full restarts.
	RestoredMin int `json:"restored_min"`
	// After the restarts: sandboxes still listed, their processes still
	// listed and running in the same network namespace, and their
	// host-side veths still there under the same index with no deletion
	// event since before the first restart.
	Kept      int `json:"kept"`
	ProcsKept int `json:"processes_kept"`
	LinksKept int `json:"links_kept"`
	// The ping across a restart (pa → pb, both with a process, with the
	// Sandboxes still there), every 10 ms.
	PingSent     int           `json:"ping_sent"`
	PingLost     int           `json:"ping_lost"`
	PingMaxGapMS float64       `json:"ping_max_gap_ms"`
	PingLastSeq  int           `json:"ping_last_seq"`
	Restart      time.Duration `json:"restart_ns"`
	CreateMS     attach.Stats  `json:"create_and_run"` // create + first process, per sandbox
	LoadAfter    string        `json:"loadavg_after,omitempty"`
	// Warnings: distinct WARN/ERROR lines the daemon logged over the
	// restarts (first few); Errors: what went wrong in the run itself.
	Warnings []string `json:"warnings,omitempty"`
	Errors   []string `json:"errors,omitempty"`
}

// measureMode runs one start mode: a fresh daemon started that way, reps
// restarts with no sandbox, n sandboxes each with a process, reps restarts
// with them, what survived, then the ping across a restart (pings packets).
func measureMode(tb testing.TB, mode testutil.StartMode, n, reps, pings int) ModeReport {
	m := ModeReport{Mode: mode, Sandboxes: n}
	fillMode(tb, &m, reps, pings)
	return m
}

// fillMode does measureMode's work into m, so that what was measured
// before a fatal failure is kept.
func fillMode(tb testing.TB, m *ModeReport, reps, pings int) {
	t := attach.StartTetherMode(tb, m.Mode)
	idle, _, warn := restarts(tb, t.D, reps)
	m.RestoreIdle = attach.Summarize(idle)
	m.Warnings = addWarnings(m.Warnings, warn)

	type sandbox struct {
		name, host string
		pid, link  int
		netns      string // readlink /proc/PID/ns/net
	}
	w := attach.WatchLinksT(tb, "/run/netns/"+t.NS)
	sbs := make([]sandbox, m.Sandboxes)
	created := make([]time.Duration, m.Sandboxes)
	for i := range sbs {
		name := fmt.Sprintf("m%d", i)
		start := time.Now()
		sb, _, err := t.Create(name)
		if err != nil {
			tb.Fatalf("%v\ndaemon log:\n%s", err, t.D.Log())
		}
		pid, err := t.Run(name, "sleep", "3600")
		if err != nil {
			tb.Fatalf("%v\ndaemon log:\n%s", err, t.D.Log())
		}
		created[i] = time.Since(start)
		ep := sb.Networks["bench"]
		if ep == nil || ep.HostIfName == "" {
			tb.Fatalf("sandbox %s: no endpoint on bench with a host interface: %+v", name, sb.Networks)
		}
		link, err := w.Index(ep.HostIfName)
		if err != nil {
			tb.Fatal(err)
		}
		netns, err := sandboxNetNS(t, pid)
		if err != nil {
			tb.Fatalf("sandbox %s: %v", name, err)
		}
		sbs[i] = sandbox{name: name, host: ep.HostIfName, pid: pid, link: link, netns: netns}
	}
	m.CreateMS = attach.Summarize(created)

	since := time.Now()
	full, counts, warn := restarts(tb, t.D, reps)
	m.RestoreFull = attach.Summarize(full)
	m.RatioP50 = attach.Ratio(m.RestoreFull.P50, m.RestoreIdle.P50)
	m.RestoredMin = slices.Min(counts)
	m.Warnings = addWarnings(m.Warnings, warn)

	listed, err := t.List()
	if err != nil {
		tb.Fatal(err)
	}
	procs := map[string][]int{}
	for _, sb := range listed {
		for _, p := range sb.Processes {
			procs[sb.Name] = append(procs[sb.Name], p.Pid)
		}
	}
	for _, sb := range sbs {
		pids, ok := procs[sb.name]
		if !ok {
			continue
		}
		m.Kept++
		if ns, err := readNetNS(sb.pid); err == nil && ns == sb.netns && slices.Contains(pids, sb.pid) {
			m.ProcsKept++
		}
		if idx, err := w.Index(sb.host); err == nil && idx == sb.link {
			if _, deleted := w.GoneAt(sb.link, since); !deleted {
				m.LinksKept++
			}
		}
	}
	if err := w.Err(); err != nil {
		m.Errors = append(m.Errors, err.Error())
	}

	// the ping across a restart, with the sandboxes still there
	var pa, pb int
	var addr netip.Addr
	for i, name := range []string{"pa", "pb"} {
		sb, _, err := t.Create(name)
		if err != nil {
			tb.Fatal(err)
		}
		pid, err := t.Run(name, "sleep", "3600")
		if err != nil {
			tb.Fatal(err)
		}
		if i == 0 {
			pa = pid
		} else {
			pb, addr = pid, sb.Networks["bench"].IPAddress
		}
	}
	if _, err := sandboxNetNS(t, pb); err != nil {
		tb.Fatal(err)
	}
	if _, err := sandboxNetNS(t, pa); err != nil {
		tb.Fatal(err)
	}
	g := pingAcrossRestart(tb, t, fmt.Sprintf("/proc/%d/ns/net", pa), addr, pings)
	m.PingSent, m.PingLost, m.PingMaxGapMS, m.PingLastSeq, m.Restart = g.Sent, g.Sent-g.Received, ms(g.MaxGap), g.LastSeq, g.Restart
	m.Warnings = addWarnings(m.Warnings, warnings(t.D.Log()))
}

// sandboxNetNS checks that process pid runs in a network namespace of its
// own (not the test's, not the daemon's host namespace) and returns it.
func sandboxNetNS(t *attach.Tether, pid int) (string, error) {
	ns, err := readNetNS(pid)
	if err != nil {
		return "", err
	}
	self, _ := os.Readlink("/proc/self/ns/net")
	host, _ := readNetNS(t.D.PID())
	if ns == self || ns == host {
		return "", fmt.Errorf("process %d runs in %s, not in a sandbox's network namespace (test %s, daemon %s)", pid, ns, self, host)
	}
	return ns, nil
}

func readNetNS(pid int) (string, error) {
	return os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
}

var (
	readySandboxesRE = regexp.MustCompile(`msg="engine ready" .*sandboxes=(\d+)`)
	warnRE           = regexp.MustCompile(`(?m)^.*level=(WARN|ERROR).*$`)
	// what varies between otherwise equal log lines
	timeRE = regexp.MustCompile(`time=\S+ `)
)

// restarts stops and starts the daemon reps times and returns each start's
// restore time, the sandboxes the engine reported, and the warnings it
// logged.
func restarts(tb testing.TB, d *testutil.Daemon, reps int) ([]time.Duration, []int, []string) {
	var took []time.Duration
	var counts []int
	var warn []string
	for range reps {
		took = append(took, restartTimes(tb, d, 1)...)
		m := readySandboxesRE.FindAllStringSubmatch(d.Log(), -1)
		if m == nil {
			tb.Fatalf("no sandboxes= in the \"engine ready\" line:\n%s", d.Log())
		}
		c, _ := strconv.Atoi(m[len(m)-1][1])
		counts = append(counts, c)
		warn = append(warn, warnings(d.Log())...)
	}
	return took, counts, warn
}

func warnings(log string) []string {
	var out []string
	for _, l := range warnRE.FindAllString(log, -1) {
		l = timeRE.ReplaceAllString(l, "")
		if len(l) > 300 {
			l = l[:300] + "…"
		}
		out = append(out, l)
	}
	return out
}

// addWarnings appends the lines of more not yet in have, up to 5 in all.
func addWarnings(have, more []string) []string {
	for _, l := range more {
		if len(have) >= 5 {
			break
		}
		if !slices.Contains(have, l) {
			have = append(have, l)
		}
	}
	return have
}

// writeModes prints the per-mode figures as Markdown tables.
func writeModes(w io.Writer, modes []ModeReport) {
	fmt.Fprintf(w, "\n| start mode | restore, 0 sandboxes (p50) | restore, N sandboxes with a process (p50) | **ratio** | per sandbox | kept: sandboxes / processes / veths | fewest restored |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|\n")
	for _, m := range modes {
		fmt.Fprintf(w, "| %s | %.2f ms | %.2f ms (N = %d, %d restarts) | **%.1f×** | %.3f ms | %d / %d / %d of %d | %d |\n", m.Mode,
			m.RestoreIdle.P50, m.RestoreFull.P50, m.Sandboxes, m.RestoreFull.N, m.RatioP50,
			(m.RestoreFull.P50-m.RestoreIdle.P50)/float64(max(m.Sandboxes, 1)), m.Kept, m.ProcsKept, m.LinksKept, m.Sandboxes, m.RestoredMin)
	}
	fmt.Fprintf(w, "\n| start mode | ping every 10 ms across a restart | sent | **lost** | longest gap | stop → answering | load after |\n")
	fmt.Fprintf(w, "|---|---|---:|---:|---:|---:|---|\n")
	for _, m := range modes {
		fmt.Fprintf(w, "| %s | pa → pb, %d other sandboxes | %d | **%d** | %.0f ms | %v | %s |\n", m.Mode, m.Sandboxes,
			m.PingSent, m.PingLost, m.PingMaxGapMS, m.Restart.Round(time.Millisecond), m.LoadAfter)
	}
	for _, m := range modes {
		for _, l := range m.Warnings {
			fmt.Fprintf(w, "\n%s: daemon logged: %s", m.Mode, l)
		}
		for _, e := range m.Errors {
			fmt.Fprintf(w, "\n%s: ERROR %s", m.Mode, e)
		}
	}
	fmt.Fprintln(w)
}

// tetherVersion is `git describe --always --dirty` of the tree the daemon
// was built from (the test runs inside the module), or BENCH_TETHER_VERSION.
func tetherVersion() string {
	if v := os.Getenv("BENCH_TETHER_VERSION"); v != "" {
		return v
	}
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
