package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/cli/cmdconn"
	"github.com/tether-net/tether/internal/stream"
)

// DefaultHost is where the CLI finds the daemon unless -H, TETHER_HOST or
// DOCKER_HOST say otherwise.
const DefaultHost = "unix:///run/tether.sock"

const (
	dialTimeout = 10 * time.Second // unix and tcp connect, TLS handshake included
	idleTimeout = 30 * time.Second // an idle connection (an ssh process) is closed after this
	hostForms   = "unix://PATH, tcp://HOST:PORT or ssh://[USER@]HOST[:PORT][/SOCKET]"
)

// Client talks to the daemon's HTTP API over one transport: a unix socket,
// TCP (plain or TLS) or ssh running `tether system dial-stdio` remotely.
type Client struct {
	host string   // the address as chosen, for messages
	dial dialFunc // one connection to the daemon, for HTTP and for exec's hijack
	http *http.Client
}

// dialFunc opens one connection to the daemon.
type dialFunc func(ctx context.Context) (net.Conn, error)

// lookupFunc reads the environment (os.LookupEnv, or a map in tests).
type lookupFunc func(key string) (string, bool)

// ErrDaemon is an error answer of the daemon, printed as Docker prints it.
type ErrDaemon struct {
	Status  int
	Message string
}

func (e *ErrDaemon) Error() string { return "Error response from daemon: " + e.Message }

// newClient picks the daemon's address (resolveHost) and TLS settings
// (resolveTLS) and builds a client; a bad address or unreadable certificate
// fails here, before any connection.
func newClient(hostFlag string, tf tlsFlags, env lookupFunc) (*Client, error) {
	host := resolveHost(hostFlag, env)
	ep, err := parseHost(host)
	if err != nil {
		return nil, err
	}
	dial, err := dialerFor(ep, resolveTLS(tf, env))
	if err != nil {
		return nil, fmt.Errorf("host %q: %w", host, err)
	}
	c := &Client{host: host, dial: dial}
	c.http = &http.Client{Transport: &http.Transport{
		DialContext:     func(ctx context.Context, _, _ string) (net.Conn, error) { return c.dial(ctx) },
		IdleConnTimeout: idleTimeout,
	}}
	return c, nil
}

// Close closes the idle connections; over ssh this ends (and reaps) the
// ssh processes.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// connect opens a connection of its own (exec's hijack, dial-stdio).
func (c *Client) connect(ctx context.Context) (net.Conn, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, c.connectError(err)
	}
	return conn, nil
}

func (c *Client) connectError(err error) error {
	hint := ""
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, fs.ErrNotExist) {
		hint = " (is the daemon running?)"
	}
	return fmt.Errorf("cannot connect to the Tether daemon at %s: %w%s", c.host, err, hint)
}

// resolveHost picks the daemon's address: the -H flag, then TETHER_HOST,
// then DOCKER_HOST, then DefaultHost. Empty values count as unset.
func resolveHost(flag string, env lookupFunc) string {
	for _, h := range []string{flag, getenv(env, "TETHER_HOST"), getenv(env, "DOCKER_HOST")} {
		if h != "" {
			return h
		}
	}
	return DefaultHost
}

func getenv(env lookupFunc, key string) string {
	v, _ := env(key)
	return v
}

// endpoint is a parsed daemon address.
type endpoint struct {
	scheme     string      // "unix", "tcp" or "ssh"
	addr       string      // unix: socket path; tcp: host:port
	serverName string      // tcp: the host, checked against the daemon's certificate
	ssh        cmdconn.SSH // ssh: user, host, port, remote socket
}

// parseHost parses a daemon address; errors name the address and the forms
// accepted.
func parseHost(host string) (endpoint, error) {
	scheme, rest, ok := strings.Cut(host, "://")
	var ep endpoint
	var err error
	switch {
	case !ok:
		err = errors.New("no scheme")
	case scheme == "unix":
		ep = unixEndpoint(rest)
	case scheme == "tcp":
		ep, err = tcpEndpoint(rest)
	case scheme == "ssh":
		ep.scheme = "ssh"
		ep.ssh, err = cmdconn.ParseSSH(host)
	default:
		err = fmt.Errorf("unsupported scheme %q", scheme)
	}
	if err != nil {
		return endpoint{}, fmt.Errorf("invalid host %q: %w (want %s)", host, err, hostForms)
	}
	return ep, nil
}

// unixEndpoint: `unix://` alone is the default socket, as for docker and
// the daemon.
func unixEndpoint(path string) endpoint {
	if path == "" {
		path = strings.TrimPrefix(DefaultHost, "unix://")
	}
	return endpoint{scheme: "unix", addr: path}
}

// tcpEndpoint wants HOST:PORT: unlike docker, which guesses 2375 or 2376,
// a missing port is an error.
func tcpEndpoint(rest string) (endpoint, error) {
	u, err := url.Parse("tcp://" + rest)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return endpoint{}, err
	}
	switch {
	case u.Hostname() == "":
		return endpoint{}, errors.New("no host name")
	case u.Port() == "":
		return endpoint{}, errors.New("no port")
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return endpoint{}, errors.New("only HOST:PORT is allowed after tcp://")
	}
	if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
		return endpoint{}, fmt.Errorf("port %q is not a number from 1 to 65535", u.Port())
	}
	return endpoint{scheme: "tcp", addr: net.JoinHostPort(u.Hostname(), u.Port()), serverName: u.Hostname()}, nil
}

// tlsFlags are the root command's TLS flags as given.
type tlsFlags struct {
	tls, verify   bool
	verifySet     bool // --tlsverify given, even =false: TLS is on
	ca, cert, key string
}

// tlsSettings are the TLS settings after flags and environment.
type tlsSettings struct {
	enabled, verify bool
	fromFlags       bool // --tls or --tlsverify on the command line
	ca, cert, key   string
	certOptional    bool // cert/key are the cert directory's defaults: absent files mean no client certificate
}

// resolveTLS applies docker's rules: --tlsverify (given at all) or a
// non-empty TETHER_TLS_VERIFY / DOCKER_TLS_VERIFY turn TLS on with
// verification; --tls alone encrypts without verifying. Files default to
// ca.pem, cert.pem and key.pem in TETHER_CERT_PATH, DOCKER_CERT_PATH or
// ~/.docker.
func resolveTLS(f tlsFlags, env lookupFunc) tlsSettings {
	s := tlsSettings{verify: f.verify, fromFlags: f.tls || f.verifySet}
	if !f.verifySet {
		s.verify = envVerify(env)
	}
	s.enabled = f.tls || f.verifySet || s.verify
	dir := certDir(env)
	s.ca = orDefault(f.ca, filepath.Join(dir, "ca.pem"))
	s.cert = orDefault(f.cert, filepath.Join(dir, "cert.pem"))
	s.key = orDefault(f.key, filepath.Join(dir, "key.pem"))
	s.certOptional = f.cert == "" && f.key == ""
	return s
}

// envVerify: TETHER_TLS_VERIFY when set (so TETHER_TLS_VERIFY= turns an
// inherited DOCKER_TLS_VERIFY off), else DOCKER_TLS_VERIFY; non-empty
// means verify, as docker reads it ("0" too).
func envVerify(env lookupFunc) bool {
	if v, ok := env("TETHER_TLS_VERIFY"); ok {
		return v != ""
	}
	return getenv(env, "DOCKER_TLS_VERIFY") != ""
}

func certDir(env lookupFunc) string {
	for _, key := range []string{"TETHER_CERT_PATH", "DOCKER_CERT_PATH"} {
		if d := getenv(env, key); d != "" {
			return d
		}
	}
	home := getenv(env, "HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	return filepath.Join(home, ".docker")
}

func orDefault(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

// config builds the client's TLS configuration: TLS 1.2 at least, the
// daemon checked against the CA when verifying, the client certificate
// presented when there is one.
func (s tlsSettings) config(serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName, InsecureSkipVerify: !s.verify}
	if s.verify {
		pool, err := loadCA(s.ca)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	cert, err := s.clientCert()
	if err != nil {
		return nil, err
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg, nil
}

func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA certificate %q: no PEM certificate in it", path)
	}
	return pool, nil
}

// clientCert loads the client's key pair; with default paths, missing files
// mean the client has no certificate (as docker does).
func (s tlsSettings) clientCert() (*tls.Certificate, error) {
	if s.certOptional && !exists(s.cert) && !exists(s.key) {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(s.cert, s.key)
	if err != nil {
		return nil, fmt.Errorf("load client certificate %q and key %q: %w", s.cert, s.key, err)
	}
	return &pair, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// dialerFor returns how to reach an endpoint. TLS applies to tcp:// only:
// --tls or --tlsverify with another scheme is an error, TLS settings from
// the environment are ignored there.
func dialerFor(ep endpoint, ts tlsSettings) (dialFunc, error) {
	if ep.scheme != "tcp" && ts.fromFlags {
		return nil, errors.New("--tls and --tlsverify apply to tcp:// hosts only")
	}
	switch {
	case ep.scheme == "unix":
		return netDialer("unix", ep.addr), nil
	case ep.scheme == "ssh":
		return sshDialer(ep.ssh), nil
	case !ts.enabled:
		return netDialer("tcp", ep.addr), nil
	}
	cfg, err := ts.config(ep.serverName)
	if err != nil {
		return nil, err
	}
	return tlsDialer(ep.addr, cfg), nil
}

// netDialer connects to a unix socket or a TCP address.
func netDialer(network, addr string) dialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		d := net.Dialer{Timeout: dialTimeout}
		return d.DialContext(ctx, network, addr)
	}
}

// tlsDialer connects over TCP and completes the TLS handshake.
func tlsDialer(addr string, cfg *tls.Config) dialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: dialTimeout}, Config: cfg}
		return d.DialContext(ctx, "tcp", addr)
	}
}

// sshDialer runs `ssh ... HOST tether [--host unix://SOCKET] system
// dial-stdio` per connection, as docker runs `docker system dial-stdio`.
func sshDialer(s cmdconn.SSH) dialFunc {
	remote := []string{"tether"}
	if s.Socket != "" {
		remote = append(remote, "--host", "unix://"+s.Socket)
	}
	args := s.Args(append(remote, "system", "dial-stdio")...)
	return func(ctx context.Context) (net.Conn, error) {
		return cmdconn.New(ctx, "ssh", args...)
	}
}

// do sends a request and decodes a JSON answer into out (when not nil);
// an out that is an io.Writer gets the answer's body as it is.
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
		var ue *url.Error // "Get "http://tether/...": " says nothing to the user
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return c.connectError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return decodeError(resp)
	}
	if out == nil {
		return nil
	}
	if w, ok := out.(io.Writer); ok {
		if _, err := io.Copy(w, resp.Body); err != nil {
			return fmt.Errorf("read the answer of %s %s: %w", method, path, err)
		}
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

// execAttached runs an exec over the stream protocol and returns the exit
// code. The connection is the client's own (any transport), hijacked after
// "101 Switching Protocols".
func (c *Client) execAttached(sandbox string, req types.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	conn, err := c.connect(context.Background())
	if err != nil {
		return -1, err
	}
	defer conn.Close()
	br, err := c.upgradeExec(conn, sandbox, req)
	if err != nil {
		return -1, err
	}
	go func() {
		if stdin != nil && req.Stdin {
			_ = stream.SendStdin(conn, stdin)
		}
	}()
	return stream.Receive(br, stdout, stderr)
}

// upgradeExec sends the exec request asking for the stream protocol and
// reads the daemon's answer; after a 101 the returned reader carries the
// frames.
func (c *Client) upgradeExec(conn net.Conn, sandbox string, req types.ExecRequest) (*bufio.Reader, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequest(http.MethodPost, "http://tether/tether/v1/sandboxes/"+url.PathEscape(sandbox)+"/exec", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Connection", "Upgrade")
	hr.Header.Set("Upgrade", types.StreamProtocol)
	if err := hr.Write(conn); err != nil {
		return nil, c.connectError(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, hr)
	if err != nil {
		return nil, c.connectError(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return br, nil
}
