package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// The CLI's remote transports end to end: the stock docker CLI and Tether's
// own CLI reach the daemon over ssh:// (a fake ssh that runs the remote
// command locally, so everything stays on this machine and its sockets),
// `tether system dial-stdio` on its own, bad addresses, and TCP+TLS inside
// the daemon's namespace.

const stockDockerPath = "/usr/local/bin/docker"

// fakeSSHScript does locally what ssh makes the remote host do: options are
// skipped, the first other word is the host, the remaining words are joined
// by spaces and run with sh -c. Each call is logged, one bracketed word per
// argument. The host "unreachable" fails as ssh does.
const fakeSSHScript = `#!/bin/sh
printf '[%s] ' "$@" >> @LOG@
echo >> @LOG@
while [ $# -gt 0 ]; do
	case "$1" in
	--) shift; break ;;
	-[BbcDEeFIiJLlmOopQRSWw]) shift 2 ;;
	-*) shift ;;
	*) break ;;
	esac
done
host=$1
shift
if [ "$host" = unreachable ]; then
	echo "ssh: connect to host $host port 22: Connection refused" >&2
	exit 255
fi
exec sh -c "$*"
`

// sshRemote is a directory first on PATH holding the fake ssh and the links
// a remote host would have: tether, and docker pointing to tether.
type sshRemote struct {
	dir, log string
	env      []string // the environment of commands under test
}

func newSSHRemote(t *testing.T) *sshRemote {
	t.Helper()
	bin := testutil.Binary(t)
	r := &sshRemote{dir: t.TempDir()}
	r.log = filepath.Join(r.dir, "ssh.log")
	script := strings.ReplaceAll(fakeSSHScript, "@LOG@", r.log)
	if err := os.WriteFile(filepath.Join(r.dir, "ssh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tether", "docker"} {
		if err := os.Symlink(bin, filepath.Join(r.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	r.env = cliEnv("PATH="+r.dir+":"+os.Getenv("PATH"), "DOCKER_CONFIG="+t.TempDir())
	return r
}

// sshLog is what the fake ssh was called with so far.
func (r *sshRemote) sshLog(t *testing.T) string {
	b, err := os.ReadFile(r.log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// cliEnv is this process's environment without anything that chooses a
// daemon or TLS, plus extra.
func cliEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "DOCKER_") || (strings.HasPrefix(k, "TETHER_") && k != "TETHER_E2E") || k == "PATH" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// runCLI runs a command with env and stdin, bounded by a minute; it returns
// the combined output.
func runCLI(env []string, stdin string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env, cmd.Stdin = env, strings.NewReader(stdin)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out: %w", name, strings.Join(args, " "), err)
	}
	return string(out), err
}

func mustRunCLI(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := runCLI(env, "", name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func stockDocker(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(stockDockerPath); err != nil {
		if testutil.E2E() {
			t.Fatalf("TETHER_E2E=1 needs the docker CLI at %s: %v", stockDockerPath, err)
		}
		t.Skipf("no docker CLI at %s", stockDockerPath)
	}
	return stockDockerPath
}

// noDialStdioLeft waits until no process (fake ssh or dial-stdio) serves
// sock any more: every connection's processes ended.
func noDialStdioLeft(t *testing.T, sock string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := dialStdioProcs(sock)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left behind: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func dialStdioProcs(sock string) []string {
	var procs []string
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		line := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(line, "dial-stdio") && strings.Contains(line, sock) {
			procs = append(procs, filepath.Base(filepath.Dir(f))+": "+line)
		}
	}
	return procs
}

// The stock docker CLI drives the daemon over ssh://, with `docker` on the
// "remote" host a link to tether running `system dial-stdio`.
func TestSSHDockerCLI(t *testing.T) {
	docker := stockDocker(t)
	_, d := host(t)
	r := newSSHRemote(t)
	h := "ssh://me@fakehost" + d.Socket
	dockerRun := func(args ...string) string {
		return mustRunCLI(t, r.env, docker, append([]string{"-H", h}, args...)...)
	}

	dockerRun("network", "create", "--subnet", "10.123.0.0/24", "viassh")
	if out := dockerRun("network", "ls"); !strings.Contains(out, "viassh") || !strings.Contains(out, "bridge") {
		t.Errorf("network ls:\n%s", out)
	}
	if out := dockerRun("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", "viassh"); strings.TrimSpace(out) != "10.123.0.0/24" {
		t.Errorf("network inspect: %q", out)
	}
	dockerRun("network", "rm", "viassh")
	if out := dockerRun("network", "ls"); strings.Contains(out, "viassh") {
		t.Errorf("network still listed after rm:\n%s", out)
	}
	if out := dockerRun("version"); !strings.Contains(out, "Server:") {
		t.Errorf("docker version:\n%s", out)
	}
	log := r.sshLog(t)
	for _, want := range []string{"[-l] [me]", "[fakehost]", "[docker]", "unix://" + d.Socket, "[system] [dial-stdio]"} {
		if !strings.Contains(log, want) {
			t.Errorf("ssh was not called with %s:\n%s", want, log)
		}
	}
	noDialStdioLeft(t, d.Socket)
}

// Tether's CLI over ssh://: plain requests, an attached exec (the hijacked
// stream, stdin included) and its exit status, with -H and from the
// environment.
func TestSSHTetherCLI(t *testing.T) {
	_, d := host(t)
	r := newSSHRemote(t)
	bin := testutil.Binary(t)
	h := "ssh://me@fakehost:2222" + d.Socket
	d.MustTether("run", "-d", "--name", "viassh", "--", "sleep", "600")

	if out := mustRunCLI(t, r.env, bin, "-H", h, "network", "ls"); !strings.Contains(out, "bridge") {
		t.Errorf("network ls:\n%s", out)
	}
	if out := mustRunCLI(t, r.env, bin, "-H", h, "exec", "viassh", "--", "echo", "hi"); out != "hi\n" {
		t.Errorf("exec echo: %q", out)
	}
	out, err := runCLI(r.env, "over ssh\n", bin, "-H", h, "exec", "-i", "viassh", "--", "sh", "-c", "cat; exit 7")
	if code := exitCode(err); code != 7 || out != "over ssh\n" {
		t.Errorf("exec -i: exit %d (%v), output %q", code, err, out)
	}
	for _, key := range []string{"TETHER_HOST", "DOCKER_HOST"} {
		if out := mustRunCLI(t, append(slices.Clone(r.env), key+"="+h), bin, "sandbox", "ls"); !strings.Contains(out, "viassh") {
			t.Errorf("sandbox ls with %s:\n%s", key, out)
		}
	}
	want := "[-o] [ConnectTimeout=30] [-T] [-l] [me] [-p] [2222] [--] [fakehost] [tether] [--host] [unix://" + d.Socket + "] [system] [dial-stdio]"
	if log := r.sshLog(t); !strings.Contains(log, want) {
		t.Errorf("ssh was not called with %s:\n%s", want, log)
	}
	noDialStdioLeft(t, d.Socket)
}

// `tether system dial-stdio` joins stdin and stdout to the daemon, whatever
// names the daemon (-H, --host=, TETHER_HOST, DOCKER_HOST) and whatever the
// binary is called; EOF on stdin ends it cleanly.
func TestDialStdio(t *testing.T) {
	_, d := host(t)
	r := newSSHRemote(t)
	sock := "unix://" + d.Socket
	tests := []struct {
		name string
		env  []string
		argv []string
	}{
		{"tether -H", nil, []string{"tether", "-H", sock, "system", "dial-stdio"}},
		{"docker --host=", nil, []string{"docker", "--host=" + sock, "system", "dial-stdio"}},
		{"TETHER_HOST", []string{"TETHER_HOST=" + sock}, []string{"tether", "system", "dial-stdio"}},
		{"DOCKER_HOST", []string{"DOCKER_HOST=" + sock}, []string{"docker", "system", "dial-stdio"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(filepath.Join(r.dir, tt.argv[0]), tt.argv[1:]...)
			cmd.Env = append(slices.Clone(r.env), tt.env...)
			pingThroughDialStdio(t, cmd)
		})
	}
	noDialStdioLeft(t, d.Socket)
}

// pingThroughDialStdio starts a dial-stdio command, sends GET /_ping on its stdin,
// reads "OK" on its stdout, closes stdin and expects a clean exit.
func pingThroughDialStdio(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()
	if _, err := io.WriteString(stdin, "GET /_ping HTTP/1.1\r\nHost: tether\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(stdout), nil)
	if err != nil {
		t.Fatalf("read answer: %v (stderr %q)", err, stderr.String())
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "OK" {
		t.Fatalf("ping: %d %q", resp.StatusCode, body)
	}
	stdin.Close()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("dial-stdio: %v, stderr %q", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dial-stdio still runs 10s after EOF on stdin")
	}
}

// Bad addresses and a failing ssh give a clear error naming the host. None
// of these reaches a network.
func TestCLIBadHosts(t *testing.T) {
	r := newSSHRemote(t)
	bin := testutil.Binary(t)
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"-H", "ftp://x", "network", "ls"}, []string{`invalid host "ftp://x": unsupported scheme "ftp"`}},
		{[]string{"-H", "tcp://", "network", "ls"}, []string{`invalid host "tcp://": no host name`}},
		{[]string{"-H", "tcp://127.0.0.1", "network", "ls"}, []string{`invalid host "tcp://127.0.0.1": no port`}},
		{[]string{"-H", "ssh://me:pw@h", "network", "ls"}, []string{`invalid host "ssh://me:pw@h"`, "password"}},
		{[]string{"-H", "unix:///x.sock", "--tlsverify", "network", "ls"}, []string{`host "unix:///x.sock": --tls and --tlsverify apply to tcp:// hosts only`}},
		{[]string{"-H", "ssh://me@unreachable", "network", "ls"}, []string{"ssh://me@unreachable", "exit status 255", "Connection refused"}},
		{[]string{"-H", "ssh://me@unreachable", "exec", "sb", "--", "true"}, []string{"ssh://me@unreachable", "exit status 255", "Connection refused"}},
		{[]string{"-H", "unix:///nonexistent/tether.sock", "system", "dial-stdio"}, []string{"unix:///nonexistent/tether.sock", "is the daemon running?"}},
	}
	for _, tt := range tests {
		out, err := runCLI(r.env, "", bin, tt.args...)
		if err == nil {
			t.Errorf("tether %s succeeded:\n%s", strings.Join(tt.args, " "), out)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("tether %s: output %q does not contain %q", strings.Join(tt.args, " "), out, w)
			}
		}
	}
}

// The CLI over TCP+TLS against the daemon's TLS listener, inside the
// daemon's namespace: flags, docker's environment variables, an attached
// exec, and the refusals (no client certificate, another CA, plain TCP).
func TestCLIOverTLS(t *testing.T) {
	testutil.RequireRoot(t)
	ca := testutil.NewCA(t, "tether-e2e-ca")
	srv := ca.Issue(t, "daemon", testutil.CertOptions{Server: true})
	cli := ca.Issue(t, "cli", testutil.CertOptions{})
	other := testutil.NewCA(t, "other-ca").Issue(t, "other", testutil.CertOptions{})
	const addr = "tcp://127.0.0.1:2376"
	ns, d := host(t, "-H", addr, "--tlsverify", "--tlscacert", srv.CA, "--tlscert", srv.Cert, "--tlskey", srv.Key)
	d.MustTether("run", "-d", "--name", "viatls", "--", "sleep", "600")
	bin := testutil.Binary(t)
	env := cliEnv("PATH=" + os.Getenv("PATH"))
	inNS := func(env []string, args ...string) (string, error) {
		return runCLI(env, "", "ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	}
	flags := []string{"-H", addr, "--tlsverify", "--tlscacert", cli.CA, "--tlscert", cli.Cert, "--tlskey", cli.Key}

	if out, err := inNS(env, append(flags, "network", "ls")...); err != nil || !strings.Contains(out, "bridge") {
		t.Errorf("network ls with flags: %v\n%s", err, out)
	}
	dockerEnv := append(slices.Clone(env), "DOCKER_HOST="+addr, "DOCKER_TLS_VERIFY=1", "DOCKER_CERT_PATH="+cli.Dir)
	if out, err := inNS(dockerEnv, "sandbox", "ls"); err != nil || !strings.Contains(out, "viatls") {
		t.Errorf("sandbox ls with DOCKER_* env: %v\n%s", err, out)
	}
	if out, err := inNS(env, append(flags, "exec", "viatls", "--", "echo", "hi")...); err != nil || out != "hi\n" {
		t.Errorf("exec over TLS: %v %q", err, out)
	}
	refusals := []struct {
		name string
		args []string
	}{
		{"no client certificate", []string{"-H", addr, "--tlsverify", "--tlscacert", cli.CA}},
		{"daemon not signed by the trusted CA", []string{"-H", addr, "--tlsverify", "--tlscacert", other.CA, "--tlscert", cli.Cert, "--tlskey", cli.Key}},
		{"client certificate of another CA", []string{"-H", addr, "--tls", "--tlscert", other.Cert, "--tlskey", other.Key}},
		{"plain TCP", []string{"-H", addr}},
	}
	for _, rf := range refusals {
		if out, err := inNS(env, append(rf.args, "network", "ls")...); err == nil {
			t.Errorf("%s: network ls succeeded:\n%s", rf.name, out)
		}
	}
}
