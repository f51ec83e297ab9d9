package e2e

// Remote API access: the daemon's TCP listener with TLS and client
// certificates, plain TCP only with --tls=false, systemd socket activation
// (fd://), the unix socket's mode and group, and the header timeout that
// keeps a slow client from holding the server. Every connection goes to the
// loopback of a namespace the test owns.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// remoteTLS is one CA with a certificate for the daemon and one for a
// client, each in Docker's layout (ca.pem, cert.pem, key.pem).
type remoteTLS struct {
	ca             *testutil.CA
	server, client testutil.CertFiles
}

func newRemoteTLS(t *testing.T) remoteTLS {
	ca := testutil.NewCA(t, "tether e2e CA")
	return remoteTLS{
		ca:     ca,
		server: ca.Issue(t, "server", testutil.CertOptions{Server: true}),
		client: ca.Issue(t, "client", testutil.CertOptions{}),
	}
}

// daemonArgs makes the daemon listen on host with mutual TLS.
func (r remoteTLS) daemonArgs(host string) []string {
	return []string{"-H", host, "--tlsverify", "--tlscacert", r.server.CA, "--tlscert", r.server.Cert, "--tlskey", r.server.Key}
}

// clientTLS trusts caFile for the daemon and presents cert (nil = none).
func clientTLS(t *testing.T, caFile string, cert *testutil.CertFiles) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	c := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		kp, err := tls.LoadX509KeyPair(cert.Cert, cert.Key)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	return c
}

// httpIn is an HTTP client whose connections go to addr inside ns, with TLS
// when tc is set.
func httpIn(ns, addr string, tc *tls.Config) *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext:       testutil.NSDialer(ns, addr),
		TLSClientConfig:   tc,
		DisableKeepAlives: true,
	}}
}

// status fetches url and returns the status code.
func status(c *http.Client, url string) (int, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// mobyTLS is the official Go client over mutual TLS to addr inside ns.
func mobyTLS(t *testing.T, ns, addr string, cert testutil.CertFiles) *client.Client {
	t.Helper()
	c, err := client.New(client.WithHost("tcp://"+addr), client.WithTLSClientConfig(cert.CA, cert.Cert, cert.Key),
		client.WithDialContext(testutil.NSDialer(ns, addr)), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// checkMoby pings the daemon and lists its networks through c.
func checkMoby(t *testing.T, c *client.Client, d *testutil.Daemon) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		t.Fatalf("ping: %v\n%s", err, d.Log())
	}
	list, err := c.NetworkList(ctx, client.NetworkListOptions{})
	if err != nil {
		t.Fatalf("network list: %v", err)
	}
	for _, n := range list.Items {
		if n.Name == "bridge" {
			return
		}
	}
	t.Errorf("network list over TLS lacks bridge: %+v", list.Items)
}

// Mutual TLS: the Go client with a certificate from the CA is served; no
// certificate, one from another CA, an expired one, plain HTTP and TLS 1.1
// are not.
func TestRemoteMutualTLS(t *testing.T) {
	r := newRemoteTLS(t)
	ns, d := host(t, r.daemonArgs("tcp://127.0.0.1:2376")...)
	const addr = "127.0.0.1:2376"
	checkMoby(t, mobyTLS(t, ns, addr, r.client), d)
	if !strings.Contains(d.Log(), `security="mutual TLS"`) {
		t.Errorf("daemon log does not announce the mutual TLS listener:\n%s", d.Log())
	}

	good := clientTLS(t, r.server.CA, &r.client)
	if code, err := status(httpIn(ns, addr, good), "https://127.0.0.1:2376/networks"); err != nil || code != http.StatusOK {
		t.Fatalf("good client: %d %v", code, err)
	}
	expired := r.ca.Issue(t, "expired", testutil.CertOptions{Validity: -1})
	stranger := testutil.NewCA(t, "other CA").Issue(t, "stranger", testutil.CertOptions{})
	tls11 := clientTLS(t, r.server.CA, &r.client)
	tls11.MinVersion, tls11.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	refused := []struct {
		name string
		tc   *tls.Config
	}{
		{"no client certificate", clientTLS(t, r.server.CA, nil)},
		{"certificate from another CA", clientTLS(t, r.server.CA, &stranger)},
		{"expired certificate", clientTLS(t, r.server.CA, &expired)},
		{"TLS 1.1", tls11},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			code, err := status(httpIn(ns, addr, tt.tc), "https://127.0.0.1:2376/_ping")
			if err == nil {
				t.Errorf("served with status %d", code)
			}
		})
	}
	t.Run("plain HTTP", func(t *testing.T) {
		if code, err := status(httpIn(ns, addr, nil), "http://127.0.0.1:2376/_ping"); err == nil && code == http.StatusOK {
			t.Error("plain HTTP to the TLS port got 200")
		}
	})
}

// dockerIn runs the stock docker CLI inside ns with a private client
// configuration directory and env added.
func dockerIn(t *testing.T, ns string, env []string, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("docker")
	if err != nil {
		if testutil.E2E() {
			t.Fatal("TETHER_E2E=1 needs the docker CLI on PATH")
		}
		t.Skip("docker CLI not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+t.TempDir(), "DOCKER_CONTEXT=", "DOCKER_HOST=", "DOCKER_TLS_VERIFY=", "DOCKER_CERT_PATH=")
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The docker CLI (v28) reaches the daemon over mutual TLS, with flags and
// with DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH; without a
// client certificate it is refused.
func TestRemoteDockerCLI(t *testing.T) {
	r := newRemoteTLS(t)
	ns, _ := host(t, r.daemonArgs("tcp://127.0.0.1:2376")...)
	c := r.client
	out, err := dockerIn(t, ns, nil, "-H", "tcp://127.0.0.1:2376", "--tlsverify",
		"--tlscacert", c.CA, "--tlscert", c.Cert, "--tlskey", c.Key, "network", "ls")
	if err != nil || !strings.Contains(out, "bridge") {
		t.Errorf("docker --tlsverify network ls: %v\n%s", err, out)
	}
	env := []string{"DOCKER_HOST=tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY=1", "DOCKER_CERT_PATH=" + c.Dir}
	out, err = dockerIn(t, ns, env, "network", "ls")
	if err != nil || !strings.Contains(out, "bridge") {
		t.Errorf("DOCKER_TLS_VERIFY=1 docker network ls: %v\n%s", err, out)
	}
	// Trusting the daemon without a certificate of its own, the CLI is turned away.
	if out, err := dockerIn(t, ns, nil, "-H", "tcp://127.0.0.1:2376", "--tlsverify", "--tlscacert", c.CA, "network", "ls"); err == nil {
		t.Errorf("docker without a client certificate was served:\n%s", out)
	}
}

// --tls=false serves plain HTTP on TCP, with a warning in the log.
func TestRemotePlainTCPWithTLSFalse(t *testing.T) {
	ns, d := host(t, "-H", "tcp://127.0.0.1:2375", "--tls=false")
	c := httpIn(ns, "127.0.0.1:2375", nil)
	for _, path := range []string{"/_ping", "/networks"} {
		if code, err := status(c, "http://127.0.0.1:2375"+path); err != nil || code != http.StatusOK {
			t.Errorf("GET %s: %d %v", path, code, err)
		}
	}
	if log := d.Log(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "WITHOUT TLS") ||
		!strings.Contains(log, "gets root on this host") {
		t.Errorf("no warning about plain TCP in the daemon log:\n%s", log)
	}
}

// Listener settings the daemon refuses before it sets anything up, naming
// the key to fix.
func TestRemoteRefusedStarts(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-remote")
	r := newRemoteTLS(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"tcp without TLS", []string{"-H", "tcp://127.0.0.1:2375"},
			[]string{"hosts: tcp://127.0.0.1:2375", "tlscert", "tlskey", "--tls=false"}},
		{"tlsverify without CA", []string{"-H", "tcp://127.0.0.1:2376", "--tlsverify", "--tlscert", r.server.Cert, "--tlskey", r.server.Key},
			[]string{"tlscacert: not given"}},
		{"tls without certificate", []string{"-H", "tcp://127.0.0.1:2376", "--tls"},
			[]string{"tls: true needs tlscert and tlskey"}},
		{"certificate file missing", []string{"-H", "tcp://127.0.0.1:2376", "--tlscert", missing, "--tlskey", r.server.Key},
			[]string{"tlscert: open " + missing + ": no such file or directory"}},
		{"fd without activation", []string{"-H", "fd://"},
			[]string{"hosts: fd://", "LISTEN_FDS is not set"}},
		{"bad port", []string{"-H", "tcp://127.0.0.1:99999", "--tls=false"},
			[]string{`hosts: "tcp://127.0.0.1:99999": port "99999" is not a number 1..65535`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := testutil.NewDaemon(t, ns, tt.args...).Fails()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("refusal lacks %q:\n%s", w, out)
				}
			}
		})
	}
	// Each refusal came before anything was set up.
	if out, err := inNS(ns, "ip", "link", "show", "tether0"); err == nil {
		t.Errorf("a refused start created tether0:\n%s", out)
	}
}

// listenInNS opens a TCP listener inside ns and returns it as a file to
// hand to the daemon.
func listenInNS(t *testing.T, ns, addr string) *os.File {
	t.Helper()
	var f *os.File
	err := netns.Do("/run/netns/"+ns, func() error {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		defer l.Close()
		f, err = l.(*net.TCPListener).File()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// listenUnixFile opens a unix socket the way systemd would for a .socket
// unit and returns it as a file; its path stays when the listener closes.
func listenUnixFile(t *testing.T, path string) *os.File {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	defer l.Close()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// fd://: a unix socket passed by "systemd" is served, and left in place
// when the daemon stops (the daemon's own socket is removed).
func TestListenFDUnix(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-fd")
	path := filepath.Join(t.TempDir(), "activated-"+testutil.Suffix()+".sock")
	d := testutil.NewDaemon(t, ns, "-H", "fd://")
	d.Activated = []*os.File{listenUnixFile(t, path)}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", path)
		},
	}}
	if code, err := status(c, "http://tether/networks"); err != nil || code != http.StatusOK {
		t.Fatalf("GET /networks on the activated socket: %d %v\n%s", code, err, d.Log())
	}
	if !strings.Contains(d.Log(), "host=fd://3") {
		t.Errorf("daemon log does not name fd://3:\n%s", d.Log())
	}
	d.Stop()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("activated socket removed by the daemon: %v", err)
	}
	if _, err := os.Stat(d.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("daemon's own socket left behind: %v", err)
	}
}

// fd://3: an activated TCP socket gets the same TLS as tcp://, and without
// TLS material (and no --tls=false) the daemon refuses it.
func TestListenFDTCP(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-fd")
	r := newRemoteTLS(t)
	d := testutil.NewDaemon(t, ns, "-H", "fd://3", "--tlsverify", "--tlscacert", r.server.CA,
		"--tlscert", r.server.Cert, "--tlskey", r.server.Key)
	d.Activated = []*os.File{listenInNS(t, ns, "127.0.0.1:2377")}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	checkMoby(t, mobyTLS(t, ns, "127.0.0.1:2377", r.client), d)
	if code, err := status(httpIn(ns, "127.0.0.1:2377", clientTLS(t, r.server.CA, nil)), "https://127.0.0.1:2377/_ping"); err == nil {
		t.Errorf("activated TLS socket served a client without certificate: %d", code)
	}

	ns2 := testutil.NetNS(t, "tth-fd")
	plain := testutil.NewDaemon(t, ns2, "-H", "fd://")
	plain.Activated = []*os.File{listenInNS(t, ns2, "127.0.0.1:2376")}
	out, err := plain.Fails()
	if err != nil || !strings.Contains(out, "hosts: fd://: fd 3: serving the API on TCP needs TLS") || !strings.Contains(out, "--tls=false") {
		t.Errorf("plain activated TCP socket not refused: %v\n%s", err, out)
	}
}

// -G: the unix socket is mode 0660, owned by the group; it is removed when
// the daemon stops.
func TestListenUnixGroup(t *testing.T) {
	g, err := user.LookupGroup("adm")
	if err != nil {
		t.Fatalf("group adm: %v", err)
	}
	_, d := host(t, "-G", "adm")
	fi, err := os.Stat(d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	gid := fi.Sys().(*syscall.Stat_t).Gid
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 || strconv.Itoa(int(gid)) != g.Gid {
		t.Errorf("socket %v gid %d, want a 0660 socket of group adm (%s)", fi.Mode(), gid, g.Gid)
	}
	d.Stop()
	if _, err := os.Stat(d.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after stop: %v", err)
	}
}

// A client that sends half a request (unix) or half a TLS handshake (TCP)
// and stops does not keep others from being served, and the server closes
// its connection once the header timeout passes.
func TestListenSlowClient(t *testing.T) {
	r := newRemoteTLS(t)
	ns, d := host(t, r.daemonArgs("tcp://127.0.0.1:2376")...)
	const addr = "127.0.0.1:2376"
	var slow []net.Conn
	for range 8 {
		c, err := net.Dial("unix", d.Socket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("GET /_pi")); err != nil {
			t.Fatal(err)
		}
		slow = append(slow, c)
	}
	for _, hello := range [][]byte{nil, {0x16, 0x03, 0x01, 0x02}} { // silent; a TLS record header and no more
		c, err := testutil.DialInNS(context.Background(), ns, "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
		slow = append(slow, c)
	}
	defer func() {
		for _, c := range slow {
			c.Close()
		}
	}()

	if code, body := newAPI(t, d).call("GET", "/networks", nil); code != http.StatusOK {
		t.Errorf("unix client next to slow ones: %d %s", code, body)
	}
	checkMoby(t, mobyTLS(t, ns, addr, r.client), d)

	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range slow {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(45 * time.Second))
			_, err := io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("slow client %d still connected after 45s", i)
			}
		}()
	}
	wg.Wait()
	t.Logf("server closed %d slow connections within %v", len(slow), time.Since(start).Round(time.Millisecond))
}
