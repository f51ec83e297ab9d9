package clustersim

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// procCPU is a process's user + system time so far (/proc/PID/stat); 0
// when it does not run.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	st, err := testutil.ReadProcStat(pid)
	if err != nil {
		return 0
	}
	return st.CPU
}

// rssKiB is a process's resident memory (VmRSS); -1 when it does not run.
func rssKiB(pid int) int64 {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	var kib int64
	for _, l := range strings.Split(string(b), "\n") {
		if _, err := fmt.Sscanf(l, "VmRSS: %d kB", &kib); err == nil {
			return kib
		}
	}
	return -1
}

func etcdVersion() string {
	out, err := exec.Command(testutil.EtcdBinary, "--version").Output()
	if err != nil {
		return ""
	}
	var v string
	fmt.Sscanf(string(out), "etcd Version: %s", &v)
	return v
}
