package testutil

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ProcStat is what tests and benchmarks read of a process in /proc/PID/stat.
type ProcStat struct {
	CPU       time.Duration // user + system time so far
	StartTime uint64        // clock ticks after boot: tells a process from a later one with its PID
}

// clockTick is USER_HZ, the unit of /proc's times (100 on Linux).
const clockTick = 10 * time.Millisecond

// ReadProcStat reads /proc/PID/stat (fields 14, 15 and 22); an error when
// the process does not run.
func ReadProcStat(pid int) (ProcStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcStat{}, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // after comm: field 3 on
	if len(f) < 20 {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return ProcStat{CPU: time.Duration(ut+st) * clockTick, StartTime: start}, nil
}

// ProcCPU is a process's user + system time so far; it fails tb when the
// process does not run.
func ProcCPU(tb testingTB, pid int) time.Duration {
	tb.Helper()
	st, err := ReadProcStat(pid)
	if err != nil {
		tb.Fatal(err)
	}
	return st.CPU
}

// OpenFDs counts a process's open file descriptors (/proc/PID/fd); it fails
// tb when the process does not run.
func OpenFDs(tb testingTB, pid int) int {
	tb.Helper()
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		tb.Fatal(err)
	}
	return len(es)
}

// testingTB is the part of testing.TB the readers use.
type testingTB interface {
	Helper()
	Fatal(args ...any)
}
