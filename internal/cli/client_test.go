package cli

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/testutil"
)

func TestResolveHost(t *testing.T) {
	tests := []struct {
		name string
		flag string
		env  envMap
		want string
	}{
		{"default", "", nil, DefaultHost},
		{"DOCKER_HOST", "", envMap{"DOCKER_HOST": "tcp://d:2376"}, "tcp://d:2376"},
		{"TETHER_HOST over DOCKER_HOST", "", envMap{"TETHER_HOST": "unix:///t.sock", "DOCKER_HOST": "tcp://d:2376"}, "unix:///t.sock"},
		{"flag over both", "ssh://h", envMap{"TETHER_HOST": "unix:///t.sock", "DOCKER_HOST": "tcp://d:2376"}, "ssh://h"},
		{"empty TETHER_HOST is unset", "", envMap{"TETHER_HOST": "", "DOCKER_HOST": "tcp://d:2376"}, "tcp://d:2376"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := resolveHost(tt.flag, tt.env.lookup); got != tt.want {
				t.Errorf("resolveHost = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseHost(t *testing.T) {
	tests := []struct {
		in      string
		want    endpoint
		wantErr string
	}{
		{in: "unix:///run/tether.sock", want: endpoint{scheme: "unix", addr: "/run/tether.sock"}},
		{in: "tcp://127.0.0.1:2376", want: endpoint{scheme: "tcp", addr: "127.0.0.1:2376", serverName: "127.0.0.1"}},
		{in: "tcp://daemon.example:2375/", want: endpoint{scheme: "tcp", addr: "daemon.example:2375", serverName: "daemon.example"}},
		{in: "tcp://[fd00::1]:2376", want: endpoint{scheme: "tcp", addr: "[fd00::1]:2376", serverName: "fd00::1"}},
		{in: "ssh://me@h:2222/run/t.sock", want: endpoint{scheme: "ssh"}},
		{in: "unix://", want: endpoint{scheme: "unix", addr: "/run/tether.sock"}},
		{in: "tcp://", wantErr: "no host name"},
		{in: "tcp://:2376", wantErr: "no host name"},
		{in: "tcp://127.0.0.1", wantErr: "no port"},
		{in: "tcp://h:http", wantErr: "port"},
		{in: "tcp://h:70000", wantErr: "port"},
		{in: "tcp://h:1/base", wantErr: "only HOST:PORT"},
		{in: "tcp://u@h:1", wantErr: "only HOST:PORT"},
		{in: "ssh://", wantErr: "no host name"},
		{in: "ftp://x", wantErr: `unsupported scheme "ftp"`},
		{in: "npipe:////./pipe/docker_engine", wantErr: `unsupported scheme "npipe"`},
		{in: "localhost:2375", wantErr: "no scheme"},
		{in: "/run/tether.sock", wantErr: "no scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseHost(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), `"`+tt.in+`"`) {
					t.Fatalf("error %v, want %q naming the host", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.ssh = tt.want.ssh // ParseSSH has its own tests
			if got != tt.want {
				t.Errorf("parseHost = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestResolveTLS(t *testing.T) {
	home := envMap{"HOME": "/home/u"}
	tests := []struct {
		name  string
		flags tlsFlags
		env   envMap
		want  tlsSettings
	}{
		{"nothing: no TLS", tlsFlags{}, home,
			tlsSettings{ca: "/home/u/.docker/ca.pem", cert: "/home/u/.docker/cert.pem", key: "/home/u/.docker/key.pem", certOptional: true}},
		{"--tls: encrypt, no verify", tlsFlags{tls: true}, home,
			tlsSettings{enabled: true, fromFlags: true, ca: "/home/u/.docker/ca.pem", cert: "/home/u/.docker/cert.pem", key: "/home/u/.docker/key.pem", certOptional: true}},
		{"--tlsverify", tlsFlags{verify: true, verifySet: true, ca: "/c/ca", cert: "/c/cert"}, home,
			tlsSettings{enabled: true, verify: true, fromFlags: true, ca: "/c/ca", cert: "/c/cert", key: "/home/u/.docker/key.pem"}},
		{"--tlsverify=false still encrypts", tlsFlags{verifySet: true}, envMap{"HOME": "/h", "DOCKER_TLS_VERIFY": "1"},
			tlsSettings{enabled: true, fromFlags: true, ca: "/h/.docker/ca.pem", cert: "/h/.docker/cert.pem", key: "/h/.docker/key.pem", certOptional: true}},
		{"DOCKER_TLS_VERIFY and DOCKER_CERT_PATH", tlsFlags{}, envMap{"DOCKER_TLS_VERIFY": "0", "DOCKER_CERT_PATH": "/d"},
			tlsSettings{enabled: true, verify: true, ca: "/d/ca.pem", cert: "/d/cert.pem", key: "/d/key.pem", certOptional: true}},
		{"TETHER_ over DOCKER_", tlsFlags{}, envMap{"TETHER_TLS_VERIFY": "1", "TETHER_CERT_PATH": "/t", "DOCKER_CERT_PATH": "/d"},
			tlsSettings{enabled: true, verify: true, ca: "/t/ca.pem", cert: "/t/cert.pem", key: "/t/key.pem", certOptional: true}},
		{"empty TETHER_TLS_VERIFY turns DOCKER_TLS_VERIFY off", tlsFlags{}, envMap{"TETHER_TLS_VERIFY": "", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/d"},
			tlsSettings{ca: "/d/ca.pem", cert: "/d/cert.pem", key: "/d/key.pem", certOptional: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := resolveTLS(tt.flags, tt.env.lookup); got != tt.want {
				t.Errorf("resolveTLS =\n %+v, want\n %+v", got, tt.want)
			}
		})
	}
}

// tlsFixture is a CA with a server certificate, a client certificate, an
// expired server certificate, and a second CA's files.
type tlsFixture struct {
	server, expired, client, other testutil.CertFiles
	ca                             *testutil.CA
}

func newTLSFixture(t *testing.T) tlsFixture {
	ca := testutil.NewCA(t, "tether-ca")
	other := testutil.NewCA(t, "other-ca")
	return tlsFixture{
		ca:      ca,
		server:  ca.Issue(t, "server", testutil.CertOptions{Server: true}),
		expired: ca.Issue(t, "expired", testutil.CertOptions{Server: true, Validity: -1}),
		client:  ca.Issue(t, "client", testutil.CertOptions{}),
		other:   other.Issue(t, "other-client", testutil.CertOptions{}),
	}
}

type tlsServerOpts struct {
	cert          testutil.CertFiles
	requireClient bool
	maxVersion    uint16
}

// tlsServer serves fakeDaemon over TLS on 127.0.0.1 and returns its tcp:// host.
func (f tlsFixture) tlsServer(t *testing.T, o tlsServerOpts) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(o.cert.Cert, o.cert.Key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(fakeDaemon())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS10, MaxVersion: o.maxVersion}
	if o.requireClient {
		pool := x509.NewCertPool()
		pool.AddCert(f.ca.Cert)
		srv.TLS.ClientAuth, srv.TLS.ClientCAs = tls.RequireAndVerifyClientCert, pool
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return "tcp://" + srv.Listener.Addr().String()
}

func TestTLSClient(t *testing.T) {
	f := newTLSFixture(t)
	home := t.TempDir() // HOME/.docker is the client's certificate directory
	if err := os.Symlink(f.client.Dir, filepath.Join(home, ".docker")); err != nil {
		t.Fatal(err)
	}
	emptyHome := t.TempDir()
	verifyCA := func(ca string) tlsFlags { return tlsFlags{verify: true, verifySet: true, ca: ca} }
	withClient := func(tf tlsFlags) tlsFlags { tf.cert, tf.key = f.client.Cert, f.client.Key; return tf }
	tests := []struct {
		name    string
		server  tlsServerOpts
		flags   tlsFlags
		env     envMap
		wantErr string
	}{
		{"--tlsverify with CA and client certificate", tlsServerOpts{cert: f.server, requireClient: true}, withClient(verifyCA(f.client.CA)), nil, ""},
		{"DOCKER_TLS_VERIFY and DOCKER_CERT_PATH", tlsServerOpts{cert: f.server, requireClient: true}, tlsFlags{},
			envMap{"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": f.client.Dir}, ""},
		{"TETHER_CERT_PATH over DOCKER_CERT_PATH", tlsServerOpts{cert: f.server, requireClient: true}, tlsFlags{},
			envMap{"TETHER_TLS_VERIFY": "1", "TETHER_CERT_PATH": f.client.Dir, "DOCKER_CERT_PATH": f.other.Dir}, ""},
		{"~/.docker by default", tlsServerOpts{cert: f.server, requireClient: true}, tlsFlags{verify: true, verifySet: true},
			envMap{"HOME": home}, ""},
		{"server signed by another CA", tlsServerOpts{cert: f.server}, verifyCA(f.other.CA), nil, "certificate signed by unknown authority"},
		{"--tls does not verify", tlsServerOpts{cert: f.server, requireClient: true}, withClient(tlsFlags{tls: true, ca: f.other.CA}), nil, ""},
		{"--tlsverify=false does not verify", tlsServerOpts{cert: f.server}, tlsFlags{verifySet: true, ca: f.other.CA}, nil, ""},
		{"expired server certificate", tlsServerOpts{cert: f.expired}, verifyCA(f.client.CA), nil, "expired"},
		{"no client certificate", tlsServerOpts{cert: f.server, requireClient: true}, verifyCA(f.client.CA), nil, "certificate required"},
		{"client certificate of another CA", tlsServerOpts{cert: f.server, requireClient: true},
			tlsFlags{verify: true, verifySet: true, ca: f.client.CA, cert: f.other.Cert, key: f.other.Key}, nil, "certificate required"}, // Go offers only a cert the server's CAs signed
		{"server below TLS 1.2", tlsServerOpts{cert: f.server, maxVersion: tls.VersionTLS11}, verifyCA(f.client.CA), nil, "protocol version"},
		{"plain HTTP to a TLS daemon", tlsServerOpts{cert: f.server}, tlsFlags{}, nil, "HTTPS server"},
		{"empty TETHER_TLS_VERIFY turns DOCKER_TLS_VERIFY off", tlsServerOpts{cert: f.server}, tlsFlags{},
			envMap{"TETHER_TLS_VERIFY": "", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": f.client.Dir}, "HTTPS server"},
		{"missing CA file", tlsServerOpts{cert: f.server}, verifyCA("/nonexistent/ca.pem"), nil, "read CA certificate"},
		{"named client certificate missing", tlsServerOpts{cert: f.server},
			tlsFlags{tls: true, cert: "/nonexistent/cert.pem"}, nil, "load client certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := f.tlsServer(t, tt.server)
			env := envMap{"HOME": emptyHome}
			for k, v := range tt.env {
				env[k] = v
			}
			err := getVersion(host, tt.flags, env)
			if tt.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			var answer *ErrDaemon
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) ||
				!errors.As(err, &answer) && !strings.Contains(err.Error(), host)) {
				t.Fatalf("error %v, want %q naming %s", err, tt.wantErr, host)
			}
		})
	}
}

// getVersion asks the daemon at host for /version; it checks the answer.
func getVersion(host string, tf tlsFlags, env envMap) error {
	c, err := newClient(host, tf, env.lookup)
	if err != nil {
		return err
	}
	defer c.Close()
	var v map[string]any
	if err := c.do("GET", "/version", nil, nil, &v); err != nil {
		return err
	}
	if v["Version"] != "fake" {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// Every transport carries plain requests and exec's hijacked stream, and
// leaves no process behind once the client is closed.
func TestTransports(t *testing.T) {
	useFakes(t)
	f := newTLSFixture(t)
	sock := unixServer(t, fakeDaemon())
	tests := []struct {
		name  string
		host  func() string
		flags tlsFlags
	}{
		{"unix", func() string { return "unix://" + sock }, tlsFlags{}},
		{"tcp+tls", func() string { return f.tlsServer(t, tlsServerOpts{cert: f.server, requireClient: true}) },
			tlsFlags{verify: true, verifySet: true, ca: f.client.CA, cert: f.client.Cert, key: f.client.Key}},
		{"ssh", func() string { return "ssh://me@fakehost:2222" + sock }, tlsFlags{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := newClient(tt.host(), tt.flags, envMap{}.lookup)
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				var v map[string]any
				if err := c.do("GET", "/version", nil, nil, &v); err != nil || v["Version"] != "fake" {
					t.Fatalf("GET /version: %v %v", v, err)
				}
			}
			var out, errOut bytes.Buffer
			code, err := c.execAttached("sb1", types.ExecRequest{Cmd: []string{"true"}}, nil, &out, &errOut)
			if err != nil || code != 3 || out.String() != "hi from sb1\n" {
				t.Fatalf("exec: code %d, err %v, stdout %q, stderr %q", code, err, out.String(), errOut.String())
			}
			c.Close()
			noChildren(t)
		})
	}
}

// A failing ssh is reported with the host and what ssh printed.
func TestSSHFailureNamesHost(t *testing.T) {
	useFakes(t)
	c, err := newClient("ssh://me@unreachable", tlsFlags{}, envMap{}.lookup)
	if err != nil {
		t.Fatal(err)
	}
	err = c.do("GET", "/_ping", nil, nil, nil)
	c.Close()
	for _, want := range []string{"ssh://me@unreachable", "exit status 255", "Connection refused"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not contain %q", err, want)
		}
	}
	_, err = c.execAttached("sb", types.ExecRequest{}, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "Connection refused") {
		t.Errorf("exec error %v", err)
	}
	noChildren(t)
}

func TestClientErrors(t *testing.T) {
	tests := []struct {
		host  string
		flags tlsFlags
		want  string
	}{
		{"ftp://x", tlsFlags{}, `invalid host "ftp://x": unsupported scheme "ftp"`},
		{"tcp://", tlsFlags{}, `invalid host "tcp://": no host name`},
		{"tcp://127.0.0.1", tlsFlags{}, `invalid host "tcp://127.0.0.1": no port`},
		{"unix:///x.sock", tlsFlags{tls: true}, `host "unix:///x.sock": --tls and --tlsverify apply to tcp:// hosts only`},
		{"ssh://h", tlsFlags{verifySet: true}, `host "ssh://h": --tls and --tlsverify apply to tcp:// hosts only`},
	}
	for _, tt := range tests {
		_, err := newClient(tt.host, tt.flags, envMap{}.lookup)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.host, err, tt.want)
		}
	}
	// TLS settings from the environment do not apply to a unix socket.
	sock := unixServer(t, fakeDaemon())
	if err := getVersion("unix://"+sock, tlsFlags{}, envMap{"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/nonexistent"}); err != nil {
		t.Fatal(err)
	}
	err := getVersion("unix:///nonexistent/d.sock", tlsFlags{}, envMap{})
	if err == nil || !strings.Contains(err.Error(), "cannot connect to the Tether daemon at unix:///nonexistent/d.sock") || !strings.Contains(err.Error(), "is the daemon running?") {
		t.Errorf("missing socket: %v", err)
	}
}
