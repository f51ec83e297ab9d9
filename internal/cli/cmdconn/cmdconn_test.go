package cmdconn

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func start(t *testing.T, name string, args ...string) *Conn {
	t.Helper()
	c, err := New(context.Background(), name, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// reaped fails unless the connection's process has exited and been waited for.
func reaped(t *testing.T, c *Conn) {
	t.Helper()
	select {
	case <-c.Exited():
	case <-time.After(5 * time.Second):
		t.Fatalf("%s still runs", c.desc)
	}
	if c.cmd.ProcessState == nil {
		t.Fatalf("%s not reaped", c.desc)
	}
}

// cat echoes what is written; CloseWrite ends it and the reader sees EOF.
func TestEchoAndHalfClose(t *testing.T) {
	c := start(t, "cat")
	want := bytes.Repeat([]byte("tether "), 50000) // more than a pipe buffer
	go func() {
		_, _ = c.Write(want)
		_ = c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want %d", len(got), len(want))
	}
	reaped(t, c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestFailureNamesCommandAndStderr(t *testing.T) {
	tests := []struct {
		name   string
		script string
		want   []string
	}{
		{"exit with message", "echo 'ssh: Could not resolve hostname nowhere' >&2; exit 255",
			[]string{"sh -c", "exit status 255", "Could not resolve hostname nowhere"}},
		{"killed", "kill -9 $$", []string{"signal: killed"}},
		{"output then failure", "printf partial; echo late >&2; exit 3", []string{"exit status 3", "late"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := start(t, "sh", "-c", tt.script)
			_, err := io.ReadAll(c)
			var ee *ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("read error %v, want an *ExitError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// A clean exit is a plain EOF, whatever the process said on stderr.
func TestCleanExitIsEOF(t *testing.T) {
	c := start(t, "sh", "-c", "echo warning >&2; printf hello")
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
}

// Writing to a process that died reports why it died.
func TestWriteAfterDeath(t *testing.T) {
	c := start(t, "sh", "-c", "echo gone >&2; exit 7")
	reaped(t, c)
	var err error
	for range 10 {
		if _, err = c.Write([]byte("x")); err != nil {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "exit status 7") || !strings.Contains(err.Error(), "gone") {
		t.Fatalf("write error %v", err)
	}
}

// Close kills a process that would not exit by itself and reaps it.
func TestCloseKillsAndReaps(t *testing.T) {
	c := start(t, "sh", "-c", "trap '' TERM; exec sleep 600")
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	reaped(t, c)
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
}

func TestReadDeadline(t *testing.T) {
	c := start(t, "cat")
	if err := c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read error %v, want a deadline error", err)
	}
}

func TestStartFailure(t *testing.T) {
	_, err := New(context.Background(), "/nonexistent/ssh", "-T")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/ssh -T") {
		t.Fatalf("error %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := New(ctx, "cat"); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled context: %v", err)
	}
}

// An HTTP exchange over the connection: the "server" is a shell printing a
// canned answer, so http.ReadResponse reads what a daemon would send.
func TestHTTPOverCommand(t *testing.T) {
	c := start(t, "sh", "-c", `read line; printf 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK'`)
	req, _ := http.NewRequest("GET", "http://tether/_ping", nil)
	if err := req.Write(c); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "OK" {
		t.Fatalf("answer %d %q", resp.StatusCode, body)
	}
}

func TestTailKeepsTheEnd(t *testing.T) {
	tl := newTail(8)
	for _, s := range []string{"abc", "defghij", "kl"} {
		_, _ = tl.Write([]byte(s))
	}
	if got := tl.String(); got != "efghijkl" {
		t.Fatalf("tail = %q", got)
	}
}
