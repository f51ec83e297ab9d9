package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// startSupervised starts sh -c script as Start does (with a pidfd from
// clone, unless noPidfd) and supervises it. It needs no root and no
// namespace: supervision does not care where the process runs.
func startSupervised(t *testing.T, script string, noPidfd bool, stdout *bytes.Buffer) *Process {
	t.Helper()
	pidfd := -1
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if !noPidfd {
		cmd.SysProcAttr.PidFD = &pidfd
	}
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return supervise(cmd, pidfd)
}

func TestSuperviseExitStatus(t *testing.T) {
	for _, tc := range []struct {
		name    string
		script  string
		noPidfd bool
		want    int
		out     string
	}{
		{name: "exit status", script: "exit 7", want: 7},
		{name: "killed by a signal: 128+N", script: "kill -9 $$", want: 137},
		{name: "success", script: "echo hello; echo world", want: 0, out: "hello\nworld\n"},
		{name: "no pidfd: a goroutine waits", script: "exit 3", noPidfd: true, want: 3},
		{name: "no pidfd, killed", script: "echo x; kill -15 $$", noPidfd: true, want: 143, out: "x\n"},
	} {
		// copied: stdout is a buffer (exec.Cmd copies it; its Wait is kept);
		// file: /dev/null (only the pidfd is kept).
		for _, copied := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/copied=%v", tc.name, copied), func(t *testing.T) {
				var out *bytes.Buffer
				if copied {
					out = &bytes.Buffer{}
				}
				p := startSupervised(t, tc.script, tc.noPidfd, out)
				code, err := p.Wait()
				if err != nil || code != tc.want {
					t.Fatalf("Wait = %d, %v; want %d", code, err, tc.want)
				}
				if copied && out.String() != tc.out {
					t.Errorf("stdout %q, want %q", out.String(), tc.out)
				}
				if again, _ := p.Wait(); again != code {
					t.Errorf("second Wait = %d, want %d", again, code)
				}
				if p.cmd != nil || p.pidfd != -1 {
					t.Errorf("after the exit: exec.Cmd held %v, pidfd %d", p.cmd != nil, p.pidfd)
				}
				if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
					t.Errorf("Signal after the exit: %v, want os.ErrProcessDone", err)
				}
			})
		}
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// TestRunningProcessHoldsOneFD: without stdio copies a running process
// costs the daemon one descriptor (its pidfd), none once reaped.
func TestRunningProcessHoldsOneFD(t *testing.T) {
	first := startSupervised(t, "exit 0", false, nil) // the reaper's epoll set exists from here on
	_, _ = first.Wait()
	before := openFDs(t)
	p := startSupervised(t, "exec sleep 1000", false, nil)
	if got := openFDs(t) - before; got != 1 {
		t.Errorf("a running process holds %d descriptors, want 1", got)
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code, _ := p.Wait(); code != 137 {
		t.Errorf("Wait = %d, want 137", code)
	}
	if got := openFDs(t) - before; got != 0 {
		t.Errorf("a reaped process holds %d descriptors, want 0", got)
	}
}

// TestReaperWatchesRunningProcesses: every running process is in the
// reaper's set (no goroutine of its own), and leaves it at its exit, also
// when many exit at once (one wake-up, several events).
func TestReaperWatchesRunningProcesses(t *testing.T) {
	before := reap.watched()
	var ps []*Process
	for range 40 {
		ps = append(ps, startSupervised(t, "exec sleep 1000", false, nil))
	}
	if got := reap.watched(); got != before+40 {
		t.Fatalf("watched %d, want %d", got, before+40)
	}
	for _, p := range ps {
		if err := p.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range ps {
		if code, err := p.Wait(); code != 137 || err != nil {
			t.Errorf("pid %d: Wait = %d, %v; want 137", p.Pid, code, err)
		}
		if p.pidfd != -1 {
			t.Errorf("pid %d: pidfd %d still open", p.Pid, p.pidfd)
		}
	}
	if got := reap.watched(); got != before {
		t.Errorf("watched %d after the exits, want %d", got, before)
	}
}

func TestOnExit(t *testing.T) {
	for _, tc := range []struct {
		name      string
		afterExit bool
	}{{"set while running", false}, {"set after the exit", true}} {
		t.Run(tc.name, func(t *testing.T) {
			p := startSupervised(t, "exec sleep 1000", false, nil)
			got := make(chan int, 2)
			if tc.afterExit {
				_ = p.Signal(syscall.SIGTERM)
				_, _ = p.Wait()
				p.OnExit(func(code int, _ error) { got <- code })
				if c := <-got; c != 128+int(syscall.SIGTERM) {
					t.Errorf("OnExit got %d", c)
				}
				return
			}
			p.OnExit(func(code int, _ error) { got <- code })
			_ = p.Signal(syscall.SIGTERM)
			if c := <-got; c != 128+int(syscall.SIGTERM) {
				t.Errorf("OnExit got %d", c)
			}
			if code, _ := p.Wait(); code != 128+int(syscall.SIGTERM) {
				t.Errorf("Wait = %d", code)
			}
			if len(got) != 0 {
				t.Error("OnExit called twice")
			}
		})
	}
}
