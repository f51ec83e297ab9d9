package attach

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/testutil"
)

// TestAttachProfileRow is the workload of profile.sh: BENCH_N sandboxes
// attached in a row through the daemon (BENCH_PROFILE_MARKS=FILE), with
// the CLOCK_MONOTONIC time of every window boundary (first and last
// BENCH_N/10) written to FILE as "name start end" lines in seconds, for
// `perf report --time`. The daemon's pid is the first line ("pid PID"),
// then where a copy of its binary is kept ("bin PATH COPY").
func TestAttachProfileRow(t *testing.T) {
	marks := os.Getenv("BENCH_PROFILE_MARKS")
	if marks == "" {
		t.Skip("set BENCH_PROFILE_MARKS (bench/attach/profile.sh)")
	}
	testutil.RequireRoot(t)
	n := EnvInt("BENCH_N", 1000)
	w := max(n/10, 1)
	tt := StartTether(t)
	stop := startObserver(t, tt.PID)
	at := make([]float64, n+1)
	took := make([]time.Duration, n)
	for i := range n {
		at[i] = mono()
		var err error
		if _, took[i], err = tt.Create(fmt.Sprintf("s%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	at[n] = mono()
	stop()
	var b strings.Builder
	fmt.Fprintf(&b, "pid %d\n", tt.PID)
	// The harness deletes the daemon's binary at exit; perf needs it for
	// the daemon's own symbols, so keep a copy beside the marks.
	keep := marks + ".tether"
	if bin, err := os.ReadFile(tt.D.Bin); err == nil && os.WriteFile(keep, bin, 0o755) == nil {
		fmt.Fprintf(&b, "bin %s %s\n", tt.D.Bin, keep)
	}
	fmt.Fprintf(&b, "first %.6f %.6f\n", at[0], at[w])
	fmt.Fprintf(&b, "last %.6f %.6f\n", at[n-w], at[n])
	if err := os.WriteFile(marks, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	f, l := Summarize(took[:w]), Summarize(took[n-w:])
	t.Logf("attach p50 first %d: %.2f ms, last %d: %.2f ms", w, f.P50, w, l.P50)
}

// startObserver runs BENCH_PROFILE_CMD (if set) through sh with $PID set
// to the daemon's pid, e.g. "strace -c -f -p $PID -o FILE", and returns a
// function that interrupts it and waits for it to end.
func startObserver(t *testing.T, pid int) func() {
	c := os.Getenv("BENCH_PROFILE_CMD")
	if c == "" {
		return func() {}
	}
	cmd := exec.Command("sh", "-c", c)
	cmd.Env = append(os.Environ(), fmt.Sprintf("PID=%d", pid))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // let it attach
	return func() {
		_ = unix.Kill(-cmd.Process.Pid, unix.SIGINT)
		_ = cmd.Wait()
	}
}

// mono is CLOCK_MONOTONIC in seconds (perf record -k CLOCK_MONOTONIC).
func mono() float64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}
