package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/stream"
)

// DefaultHost is where the CLI finds the daemon unless -H or TETHER_HOST say otherwise.
const DefaultHost = "unix:///run/tether.sock"

// Client talks to the daemon's HTTP API.
type Client struct {
	host string
	path string // unix socket path
	http *http.Client
}

// ErrDaemon is an error answer of the daemon, printed as Docker prints it.
type ErrDaemon struct {
	Status  int
	Message string
}

func (e *ErrDaemon) Error() string { return "Error response from daemon: " + e.Message }

func newClient(host string) (*Client, error) {
	if host == "" {
		host = os.Getenv("TETHER_HOST")
	}
	if host == "" {
		host = DefaultHost
	}
	path, ok := strings.CutPrefix(host, "unix://")
	if !ok {
		return nil, fmt.Errorf("host %q: only unix:// addresses are supported yet", host)
	}
	c := &Client{host: host, path: path}
	c.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	return c, nil
}

// do sends a request and decodes a JSON answer into out (when not nil).
func (c *Client) do(method, path string, query url.Values, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	u := "http://tether" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot connect to the Tether daemon at %s: %w (is the daemon running?)", c.host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return decodeError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

func decodeError(resp *http.Response) error {
	var m struct{ Message string }
	b, _ := io.ReadAll(resp.Body)
	if json.Unmarshal(b, &m) != nil || m.Message == "" {
		m.Message = strings.TrimSpace(string(b))
	}
	return &ErrDaemon{Status: resp.StatusCode, Message: m.Message}
}

// execAttached runs an exec over the stream protocol and returns the exit code.
func (c *Client) execAttached(sandbox string, req api.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	conn, err := net.DialTimeout("unix", c.path, 10*time.Second)
	if err != nil {
		return -1, fmt.Errorf("cannot connect to the Tether daemon at %s: %w", c.host, err)
	}
	defer conn.Close()
	body, _ := json.Marshal(req)
	hr, _ := http.NewRequest(http.MethodPost, "http://tether/tether/v1/sandboxes/"+url.PathEscape(sandbox)+"/exec", bytes.NewReader(body))
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Connection", "Upgrade")
	hr.Header.Set("Upgrade", api.StreamProtocol)
	if err := hr.Write(conn); err != nil {
		return -1, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, hr)
	if err != nil {
		return -1, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return -1, decodeError(resp)
	}
	go func() {
		if stdin != nil && req.Stdin {
			_ = stream.SendStdin(conn, stdin)
		}
	}()
	return stream.Receive(br, stdout, stderr)
}
