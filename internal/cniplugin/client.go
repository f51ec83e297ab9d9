package cniplugin

// The plugin's side of the daemon's CNI routes (internal/api/types/cni.go):
// plain HTTP/1.1 over the daemon's unix socket, JSON both ways, errors as
// the API's {"message": "..."}. A CNI plugin is a short-lived process, so
// one client serves one command and every request has one deadline.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// requestTimeout bounds one request, connection included: a runtime waits
// for the plugin, and a hung daemon must not hang the runtime.
const requestTimeout = 30 * time.Second

// client talks to the daemon on one unix socket.
type client struct {
	socket string // as configured, for messages (unix:///run/tether.sock)
	path   string // the socket file
	http   *http.Client
}

// newClient makes a client for the socket file path; socket is the
// configured form, used in messages.
func newClient(socket, path string, timeout time.Duration) *client {
	c := &client{socket: socket, path: path}
	c.http = &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:       c.dial,
			DisableKeepAlives: true, // one command, a few requests: nothing to keep
		},
	}
	return c
}

// dial connects to the daemon's socket; its failures are unreachableError,
// which callers tell apart from answers the daemon gave.
func (c *client) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil && ctx.Err() == nil {
		return nil, &unreachableError{socket: c.socket, err: err}
	}
	if err != nil {
		return nil, err // out of time: a timeoutError
	}
	return conn, nil
}

// unreachableError: no connection to the daemon could be made.
type unreachableError struct {
	socket string
	err    error
}

func (e *unreachableError) Error() string {
	hint := ""
	if e.down() {
		hint = " (is the tether daemon running?)"
	}
	return fmt.Sprintf("cannot connect to the tether daemon at %s: %v%s", e.socket, e.err, hint)
}

func (e *unreachableError) Unwrap() error { return e.err }

// down: nothing listens on the socket (connection refused) or the socket
// file is missing; the daemon is not running, as opposed to a socket this
// process may not open.
func (e *unreachableError) down() bool {
	return errors.Is(e.err, syscall.ECONNREFUSED) || errors.Is(e.err, fs.ErrNotExist) ||
		errors.Is(e.err, syscall.ENOTDIR)
}

// daemonError is an error status from the daemon, with its message.
type daemonError struct {
	method, path string
	status       int
	message      string
}

func (e *daemonError) Error() string {
	return fmt.Sprintf("tether daemon: %s (%s %s: %d %s)", e.message, e.method, e.path,
		e.status, http.StatusText(e.status))
}

// timeoutError: the daemon took longer than the request timeout.
type timeoutError struct {
	socket string
	after  time.Duration
	err    error
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("the tether daemon at %s did not answer within %s: %v", e.socket, e.after, e.err)
}

func (e *timeoutError) Unwrap() error { return e.err }

// do sends one request; in, when not nil, is the JSON body; out, when not
// nil, receives the JSON answer of a 2xx status. Errors are
// *unreachableError, *timeoutError, *daemonError or a protocol error.
func (c *client) do(method, path string, in, out any) error {
	req, err := c.request(method, path, in)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.transportError(method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return &daemonError{method: method, path: path, status: resp.StatusCode, message: errorMessage(body)}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s %s: decode the answer: %w", method, path, err)
	}
	return nil
}

func (c *client) request(method, path string, in any) (*http.Request, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encode the request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, "http://tether"+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// transportError sorts an error of http.Client.Do: no connection, no
// answer in time, or a broken exchange.
func (c *client) transportError(method, path string, err error) error {
	var ue *unreachableError
	if errors.As(err, &ue) {
		return ue
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &timeoutError{socket: c.socket, after: c.http.Timeout, err: err}
	}
	return fmt.Errorf("%s %s on the tether daemon at %s: %w", method, path, c.socket, err)
}

// errorMessage is the API's {"message": ...}, or the body itself when it
// is not that (a proxy, an older daemon without the route).
func errorMessage(body []byte) string {
	var e struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return e.Message
	}
	if s := strings.TrimSpace(string(body)); s != "" {
		return s
	}
	return "no message"
}
