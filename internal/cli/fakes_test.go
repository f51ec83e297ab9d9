package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/stream"
)

// The test binary doubles as a fake ssh and a fake remote tether: tests put
// links named ssh and tether to it first on PATH and set fakesEnv.
const fakesEnv = "TETHER_CLI_TEST_FAKES"

func TestMain(m *testing.M) {
	if os.Getenv(fakesEnv) == "1" {
		switch filepath.Base(os.Args[0]) {
		case "ssh":
			os.Exit(fakeSSH(os.Args[1:]))
		case "tether":
			os.Exit(Execute(os.Args[1:], "test"))
		}
	}
	os.Exit(m.Run())
}

// fakeSSH does locally what ssh makes the remote host do: options are
// skipped, the first other word is the host, the remaining words are joined
// by spaces and run by sh -c. The host "unreachable" fails as ssh does.
func fakeSSH(args []string) int {
	host, remote := splitSSHArgs(args)
	if host == "unreachable" {
		fmt.Fprintln(os.Stderr, "ssh: connect to host unreachable port 22: Connection refused")
		return 255
	}
	err := syscall.Exec("/bin/sh", []string{"sh", "-c", strings.Join(remote, " ")}, os.Environ())
	fmt.Fprintln(os.Stderr, "fake ssh:", err)
	return 127
}

// sshValueOptions are the ssh options that take a value.
var sshValueOptions = strings.Fields("-B -b -c -D -E -e -F -I -i -J -L -l -m -O -o -p -Q -R -S -W -w")

func splitSSHArgs(args []string) (host string, remote []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--" && i+1 < len(args):
			return args[i+1], args[i+2:]
		case slices.Contains(sshValueOptions, a):
			i++
		case strings.HasPrefix(a, "-"):
		default:
			return a, args[i+1:]
		}
	}
	return "", nil
}

// useFakes puts the ssh and tether links first on PATH.
func useFakes(t *testing.T) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{"ssh", "tether"} {
		if err := os.Symlink(self, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	t.Setenv(fakesEnv, "1")
}

// fakeDaemon answers /_ping, /version and an attached exec whose process
// prints "hi from SANDBOX" and exits with status 3.
func fakeDaemon() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "OK") })
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"Version":"fake"}`) })
	mux.HandleFunc("POST /tether/v1/sandboxes/{id}/exec", fakeExec)
	return mux
}

func fakeExec(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != types.StreamProtocol {
		http.Error(w, `{"message":"no upgrade"}`, http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", types.StreamProtocol)
	_ = brw.Flush()
	stdout, _ := stream.NewWriters(conn)
	fmt.Fprintf(stdout, "hi from %s\n", r.PathValue("id"))
	_ = stream.WriteExit(stdout, 3)
}

// unixServer serves h on a socket in a temporary directory.
func unixServer(t *testing.T, h http.Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return path
}

// envMap is an environment for resolveHost and resolveTLS.
type envMap map[string]string

func (m envMap) lookup(key string) (string, bool) {
	v, ok := m[key]
	return v, ok
}

// noChildren waits until this process has no child left, zombies included:
// every process a connection started has been killed and reaped.
func noChildren(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		kids := children(os.Getpid())
		if len(kids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("children left behind: %v", kids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// children lists "PID (COMM) STATE" of the processes whose parent is pid.
func children(pid int) []string {
	var kids []string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:]) // state, ppid, ...
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, s[:i+1]+" "+f[0])
		}
	}
	return kids
}

// rawGet writes a GET request to w and reads the answer from r.
func rawGet(w io.Writer, r *bufio.Reader, path string) (*http.Response, error) {
	req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://tether"+path, nil)
	if err := req.Write(w); err != nil {
		return nil, err
	}
	return http.ReadResponse(r, req)
}
