package attach

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// ClockTicks is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const ClockTicks = 100

// ProcTicks is a process's user+system CPU time (/proc/PID/stat), in ticks.
func ProcTicks(pid int) int64 {
	st, err := testutil.ReadProcStat(pid)
	if err != nil {
		return 0
	}
	return int64(st.CPU * ClockTicks / time.Second)
}

// BusyTicks is the machine's non-idle CPU time (/proc/stat, all CPUs).
func BusyTicks() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var busy int64
	for i, v := range strings.Fields(line)[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 8 { // not idle, iowait, guest
			busy += n
		}
	}
	return busy
}

// RequireIperf3 checks that iperf3 is installed; without it the test fails
// under TETHER_E2E=1 (.ci/run installs it) and skips otherwise.
func RequireIperf3(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("iperf3"); err == nil {
		return
	}
	if testutil.E2E() {
		tb.Fatal("iperf3 not found (Debian package iperf3)")
	}
	tb.Skip("iperf3 not found (Debian package iperf3)")
}
