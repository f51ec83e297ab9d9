package e2e

// A headless Chromium for the topology page's tests (ui_test.go): Debian's
// chromium, run inside the daemon's network namespace with `ip netns exec`
// (so 127.0.0.1 is the daemon's loopback), in a process group of its own
// that the test kills, with a profile in the test's temporary directory.
// One-shot runs (--dump-dom, --screenshot) and a DevTools session over a
// pipe (--remote-debugging-pipe: JSON messages ended by NUL on fds 3 and
// 4, no port, no WebSocket) for what a one-shot run cannot see: the page
// changing while it stays open.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// chromium finds the browser. Under TETHER_E2E=1 its absence is a failure.
func chromium(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if testutil.E2E() {
			t.Fatal("TETHER_E2E=1 needs Debian's chromium on PATH for the topology page's test")
		}
		t.Skip("chromium not installed")
	}
	return bin
}

// browserCmd is chromium with args in namespace ns, in its own process
// group; every process of it is killed when the test ends, and the test
// fails if one survives.
func browserCmd(t *testing.T, ns string, args ...string) *exec.Cmd {
	t.Helper()
	bin := chromium(t)
	dir := t.TempDir()
	base := []string{"netns", "exec", ns, bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-extensions", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + filepath.Join(dir, "profile")}
	cmd := exec.Command("ip", append(base, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "XDG_CACHE_HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t.Cleanup(func() { killBrowser(t, cmd, dir) })
	return cmd
}

// killBrowser kills the browser's process group and every process whose
// command line names its profile directory (a helper that left the group),
// by PID, then checks that none is left.
func killBrowser(t *testing.T, cmd *exec.Cmd, dir string) {
	if cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	for _, pid := range procsNaming(dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if cmd.ProcessState == nil {
		_ = cmd.Wait()
	}
	deadline := time.Now().Add(10 * time.Second)
	for left := procsNaming(dir); len(left) > 0; left = procsNaming(dir) {
		if time.Now().After(deadline) {
			t.Errorf("chromium processes %v outlived the test", left)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procsNaming lists the live (not zombie) processes whose command line
// contains s.
func procsNaming(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(cmdline, []byte(s)) {
			continue
		}
		if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
				continue
			}
		}
		out = append(out, pid)
	}
	return out
}

// runBrowser runs a one-shot chromium to its end (at most 2 minutes) and
// returns its standard output.
func runBrowser(t *testing.T, ns string, args ...string) []byte {
	t.Helper()
	cmd := browserCmd(t, ns, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("chromium %v: %v\n%s", args, err, tail(errOut.String()))
		}
	case <-time.After(2 * time.Minute):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("chromium %v did not finish within 2 minutes\n%s", args, tail(errOut.String()))
	}
	return out.Bytes()
}

func tail(s string) string {
	if len(s) > 4000 {
		return "…" + s[len(s)-4000:]
	}
	return s
}

// devtools is a DevTools protocol session with a browser over its pipe,
// attached to one page.
type devtools struct {
	t       *testing.T
	in      *os.File // the browser's fd 3
	msgs    chan map[string]json.RawMessage
	id      int
	session string
	stderr  *testutil.SyncBuffer
}

// openPage starts a browser with the DevTools pipe and opens url in it.
func openPage(t *testing.T, ns, url string) *devtools {
	t.Helper()
	cmd := browserCmd(t, ns, "--remote-debugging-pipe", "--window-size=1400,900", "about:blank")
	toBrowser, in, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out, fromBrowser, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	dt := &devtools{t: t, in: in, msgs: make(chan map[string]json.RawMessage, 64), stderr: &testutil.SyncBuffer{}}
	cmd.ExtraFiles = []*os.File{toBrowser, fromBrowser}
	cmd.Stderr = dt.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	toBrowser.Close()
	fromBrowser.Close()
	t.Cleanup(func() { in.Close(); out.Close() })
	go dt.read(out)
	var target struct{ TargetID string }
	dt.call("Target.createTarget", map[string]any{"url": url}, &target)
	var attached struct{ SessionID string }
	dt.call("Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	dt.session = attached.SessionID
	return dt
}

// read passes the browser's messages on until the pipe closes.
func (d *devtools) read(f *os.File) {
	defer close(d.msgs)
	r := bufio.NewReader(f)
	for {
		b, err := r.ReadBytes(0)
		if err != nil {
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(b[:len(b)-1], &m) == nil {
			d.msgs <- m
		}
	}
}

// call sends one command (to the page once attached) and decodes its
// result; events and other answers on the way are dropped.
func (d *devtools) call(method string, params any, result any) {
	d.t.Helper()
	if err := d.try(method, params, result); err != nil {
		d.t.Fatal(err)
	}
}

// try is call returning the browser's refusal of the command.
func (d *devtools) try(method string, params any, result any) error {
	d.t.Helper()
	d.id++
	msg := map[string]any{"id": d.id, "method": method, "params": params}
	if d.session != "" {
		msg["sessionId"] = d.session
	}
	b, _ := json.Marshal(msg)
	if _, err := d.in.Write(append(b, 0)); err != nil {
		d.t.Fatalf("devtools %s: %v\n%s", method, err, tail(d.stderr.String()))
	}
	timeout := time.After(time.Minute)
	for {
		select {
		case m, ok := <-d.msgs:
			if !ok {
				d.t.Fatalf("devtools %s: the browser closed its pipe\n%s", method, tail(d.stderr.String()))
			}
			if string(m["id"]) != strconv.Itoa(d.id) {
				continue
			}
			if e, ok := m["error"]; ok {
				return fmt.Errorf("devtools %s: %s", method, e)
			}
			if result != nil {
				if err := json.Unmarshal(m["result"], result); err != nil {
					d.t.Fatalf("devtools %s: %v: %s", method, err, m["result"])
				}
			}
			return nil
		case <-timeout:
			d.t.Fatalf("devtools %s: no answer within a minute\n%s", method, tail(d.stderr.String()))
		}
	}
}

// eval evaluates a JavaScript expression in the page and decodes its value.
func (d *devtools) eval(expr string, v any) {
	d.t.Helper()
	if err := d.tryEval(expr, v); err != nil {
		d.t.Fatal(err)
	}
}

// tryEval is eval returning the error; an error also while the page has
// no JavaScript context yet (it is still loading).
func (d *devtools) tryEval(expr string, v any) error {
	d.t.Helper()
	var r struct {
		Result           struct{ Value json.RawMessage }
		ExceptionDetails *struct{ Text string }
	}
	if err := d.try("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r); err != nil {
		return err
	}
	if r.ExceptionDetails != nil {
		return fmt.Errorf("evaluate %s: %s", expr, r.ExceptionDetails.Text)
	}
	if err := json.Unmarshal(r.Result.Value, v); err != nil {
		return fmt.Errorf("evaluate %s: %v: %s", expr, err, r.Result.Value)
	}
	return nil
}

// waitTrue waits (at most limit) until a JavaScript expression is true;
// evaluation errors (the page between two documents) count as false.
func (d *devtools) waitTrue(what, expr string, limit time.Duration) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var last error
	for {
		var ok bool
		last = d.tryEval("Boolean("+expr+")", &ok)
		if last == nil && ok {
			return
		}
		select {
		case <-ctx.Done():
			var state string
			_ = d.tryEval("document.body ? document.body.dataset.state + ': ' + document.getElementById('status').textContent : 'no body'", &state)
			d.t.Fatalf("not within %v: %s (page state %q, last error %v)", limit, what, state, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// screenshot captures the page as a PNG.
func (d *devtools) screenshot() []byte {
	d.t.Helper()
	var r struct{ Data []byte }
	d.call("Page.captureScreenshot", map[string]any{"format": "png"}, &r)
	return r.Data
}

// jsString quotes s for a JavaScript expression.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
