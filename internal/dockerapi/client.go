// Package dockerapi is a small client of the Docker Engine API: the few calls
// Tether's Docker plugin makes to the local dockerd (network names by ID,
// network create/remove/list, a container's names on its networks, and the
// event stream). It speaks plain HTTP over the daemon's unix socket (or plain
// tcp://), with net/http and encoding/json only.
//
// Requests go to unversioned paths (/networks, not /v1.44/networks). dockerd
// serves an unversioned request at its default API version, which is its
// newest one unless the operator lowered it, so there is no negotiation round
// trip and no pinned version that a later dockerd could drop (Docker 29
// already refuses anything below its minimum). Every field read here exists
// unchanged from API 1.44 (the first with DNSNames) to the current one.
package dockerapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tether-net/tether/internal/listen"
)

// DefaultTimeout bounds every call but the event stream.
const DefaultTimeout = 10 * time.Second

// maxBody bounds the answer read from dockerd (a network list of thousands of
// networks is a few MB); maxErrBody the error text kept.
const (
	maxBody    = 64 << 20
	maxErrBody = 64 << 10
)

// unixHost is the Host header of requests over a unix socket (dockerd
// ignores it; HTTP requires one).
const unixHost = "api.moby.localhost"

// Kinds of Error a caller branches on, with errors.Is.
var (
	ErrNotFound = errors.New("not found")      // 404
	ErrConflict = errors.New("conflict")       // 409
	ErrInUse    = errors.New("network in use") // NetworkRemove: 403 or 409
)

// Error is an answer of dockerd outside 2xx: its status and the message of
// its {"message": "..."} body (or the body itself when it is not that JSON).
type Error struct {
	Method, Path string
	Status       int
	Message      string
	kind         error // ErrNotFound, ErrConflict, ErrInUse or nil
}

func (e *Error) Error() string {
	return fmt.Sprintf("docker API: %s %s: %d: %s", e.Method, e.Path, e.Status, e.Message)
}

// Unwrap makes errors.Is(err, ErrNotFound) and the like work.
func (e *Error) Unwrap() error { return e.kind }

// Client talks to one dockerd. Safe for concurrent use.
type Client struct {
	host    string // as given to New, for messages
	base    string // scheme and authority of every request URL
	http    *http.Client
	timeout time.Duration // per call, streams excepted
}

// New returns a client of the dockerd at host: "unix:///path/docker.sock" or
// "tcp://host:port" (plain HTTP, no TLS); the forms and defaults are those of
// dockerd's -H (listen.ParseHost). It does not connect; see Ping.
func New(host string) (*Client, error) {
	if strings.TrimSpace(host) == "" {
		return nil, errors.New("docker host is empty (want unix:///path or tcp://host:port)")
	}
	h, err := listen.ParseHost(host, listen.PortPlain)
	if err != nil {
		return nil, fmt.Errorf("docker host %w", err)
	}
	var d net.Dialer
	tr := &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	c := &Client{host: host, http: &http.Client{Transport: tr}, timeout: DefaultTimeout}
	switch h.Proto {
	case "unix":
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", h.Addr)
		}
		c.base = "http://" + unixHost
	case "tcp":
		tr.DialContext = d.DialContext
		c.base = "http://" + h.Addr
	default:
		return nil, fmt.Errorf("docker host %q: want unix:///path or tcp://host:port", host)
	}
	return c, nil
}

// Host is the address the client was made for.
func (c *Client) Host() string { return c.host }

// Ping checks that dockerd answers: GET /_ping.
func (c *Client) Ping(ctx context.Context) error {
	return c.call(ctx, http.MethodGet, "/_ping", nil, nil)
}

// call sends one request bounded by the client's timeout and decodes a 2xx
// JSON answer into out (nil: the answer is discarded).
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.send(ctx, method, path, nil, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, maxBody)
	if out == nil {
		_, _ = io.Copy(io.Discard, body)
		return nil
	}
	if err := json.NewDecoder(body).Decode(out); err != nil {
		return fmt.Errorf("docker API: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// send sends one request and returns the response when its status is 2xx;
// otherwise it closes it and returns an *Error.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("docker API: %s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("docker API: %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("docker API: %s %s (%s): %w", method, path, c.host, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, apiError(method, path, resp)
}

// apiError reads dockerd's error answer.
func apiError(method, path string, resp *http.Response) *Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrBody))
	var m struct {
		Message string `json:"message"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &m) == nil && m.Message != "" {
		msg = m.Message
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e := &Error{Method: method, Path: path, Status: resp.StatusCode, Message: msg}
	switch resp.StatusCode {
	case http.StatusNotFound:
		e.kind = ErrNotFound
	case http.StatusConflict:
		e.kind = ErrConflict
	}
	return e
}

// objectPath is prefix/id with id escaped; an empty id is refused before
// anything is sent (GET /networks/ would list every network).
func objectPath(prefix, what, id string) (string, error) {
	if strings.TrimSpace(id) == "" {
		return "", fmt.Errorf("docker API: empty %s ID", what)
	}
	return prefix + "/" + url.PathEscape(id), nil
}
