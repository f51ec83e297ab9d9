package cli

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rawServer accepts one connection on a unix socket and runs serve on it.
func rawServer(t *testing.T, serve func(net.Conn)) net.Conn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raw.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c)
	}()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// proxy runs proxyStdio in the background; the channel gets its result.
func proxy(conn net.Conn, in io.Reader, out io.Writer) chan error {
	done := make(chan error, 1)
	go func() { done <- proxyStdio(conn, in, out) }()
	return done
}

func waitDone(t *testing.T, done chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("proxyStdio did not return")
	}
}

// The end of stdin reaches the daemon as EOF (half-close): a server that
// answers only after EOF still gets its answer through.
func TestProxyStdioHalfClose(t *testing.T) {
	conn := rawServer(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		fmt.Fprintf(c, "got %q", b)
	})
	var out bytes.Buffer
	waitDone(t, proxy(conn, strings.NewReader("request"), &out))
	if out.String() != `got "request"` {
		t.Fatalf("stdout %q", out.String())
	}
}

// When the daemon closes its side, dial-stdio ends though stdin is open.
func TestProxyStdioDaemonCloses(t *testing.T) {
	conn := rawServer(t, func(c net.Conn) { io.WriteString(c, "bye") })
	in, inW := io.Pipe()
	defer inW.Close()
	var out bytes.Buffer
	waitDone(t, proxy(conn, in, &out))
	if out.String() != "bye" {
		t.Fatalf("stdout %q", out.String())
	}
}

// An HTTP exchange through dial-stdio: ping, then EOF on stdin, and the
// daemon's close ends the proxy.
func TestProxyStdioHTTP(t *testing.T) {
	sock := unixServer(t, fakeDaemon())
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	in, inW := io.Pipe()
	out, outW := io.Pipe()
	done := proxy(conn, in, outW)
	resp, err := rawGet(inW, bufio.NewReader(out), "/_ping")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "OK" {
		t.Fatalf("ping: %d %q", resp.StatusCode, body)
	}
	inW.Close()
	go io.Copy(io.Discard, out)
	waitDone(t, done)
}
