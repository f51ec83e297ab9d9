package listen

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/testutil"
)

func TestServerTLSConfig(t *testing.T) {
	ca := testutil.NewCA(t, "test CA")
	srv := ca.Issue(t, "server", testutil.CertOptions{Server: true})
	tests := []struct {
		verify bool
		auth   tls.ClientAuthType
	}{
		{true, tls.RequireAndVerifyClientCert},
		{false, tls.NoClientCert},
	}
	for _, tt := range tests {
		c, err := ServerTLS(TLSFiles{CA: srv.CA, Cert: srv.Cert, Key: srv.Key}, tt.verify)
		if err != nil {
			t.Fatal(err)
		}
		if c.MinVersion != tls.VersionTLS12 || c.ClientAuth != tt.auth || len(c.Certificates) != 1 ||
			(c.ClientCAs != nil) != tt.verify || strings.Join(c.NextProtos, ",") != "http/1.1" {
			t.Errorf("verify %v: MinVersion %x ClientAuth %v certs %d ClientCAs %v NextProtos %q",
				tt.verify, c.MinVersion, c.ClientAuth, len(c.Certificates), c.ClientCAs != nil, c.NextProtos)
		}
	}
}

func TestServerTLSErrors(t *testing.T) {
	ca := testutil.NewCA(t, "test CA")
	a := ca.Issue(t, "a", testutil.CertOptions{Server: true})
	b := ca.Issue(t, "b", testutil.CertOptions{Server: true})
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name  string
		files TLSFiles
		want  string
	}{
		{"certificate missing", TLSFiles{CA: a.CA, Cert: missing, Key: a.Key}, "tlscert: open " + missing + ": no such file or directory"},
		{"key missing", TLSFiles{CA: a.CA, Cert: a.Cert, Key: missing}, "tlskey: open " + missing + ": no such file or directory"},
		{"CA missing", TLSFiles{CA: missing, Cert: a.Cert, Key: a.Key}, "tlscacert: open " + missing},
		{"CA not PEM", TLSFiles{CA: notPEM, Cert: a.Cert, Key: a.Key}, "tlscacert: no PEM certificate in"},
		{"CA not given", TLSFiles{Cert: a.Cert, Key: a.Key}, "tlscacert: no file given"},
		{"certificate not PEM", TLSFiles{CA: a.CA, Cert: notPEM, Key: a.Key}, `tlscert "` + notPEM + `", tlskey "` + a.Key + `": tls: `},
		{"key of another certificate", TLSFiles{CA: a.CA, Cert: a.Cert, Key: b.Key}, "private key does not match public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ServerTLS(tt.files, true)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestMutualTLSHandshake runs the server configuration against clients over
// an in-memory connection: only a current certificate from the CA, over TLS
// 1.2 or later, is accepted.
func TestMutualTLSHandshake(t *testing.T) {
	ca := testutil.NewCA(t, "test CA")
	srv := ca.Issue(t, "server", testutil.CertOptions{Server: true})
	conf, err := ServerTLS(TLSFiles{CA: srv.CA, Cert: srv.Cert, Key: srv.Key}, true)
	if err != nil {
		t.Fatal(err)
	}
	good := ca.Issue(t, "good", testutil.CertOptions{})
	expired := ca.Issue(t, "expired", testutil.CertOptions{Validity: -1})
	stranger := testutil.NewCA(t, "other CA").Issue(t, "stranger", testutil.CertOptions{})
	tests := []struct {
		name   string
		client *testutil.CertFiles
		maxVer uint16
		ok     bool
	}{
		{"good client", &good, 0, true},
		{"good client, TLS 1.2", &good, tls.VersionTLS12, true},
		{"no client certificate", nil, 0, false},
		{"certificate from another CA", &stranger, 0, false},
		{"expired certificate", &expired, 0, false},
		{"TLS 1.1", &good, tls.VersionTLS11, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := handshake(t, conf, clientConfig(t, srv.CA, tt.client, tt.maxVer))
			if (err == nil) != tt.ok {
				t.Errorf("server handshake error %v, want accepted=%v", err, tt.ok)
			}
		})
	}
}

func clientConfig(t *testing.T, caFile string, cert *testutil.CertFiles, maxVer uint16) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	c := &tls.Config{RootCAs: roots, ServerName: "localhost", MaxVersion: maxVer}
	if maxVer != 0 && maxVer < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS10
	}
	if cert != nil {
		kp, err := tls.LoadX509KeyPair(cert.Cert, cert.Key)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	return c
}

// handshake runs both ends over net.Pipe and returns the server's verdict.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	sc, cc := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := tls.Client(cc, client)
		_ = c.Handshake()
		cc.Close()
	}()
	s := tls.Server(sc, server)
	err := s.Handshake()
	sc.Close()
	<-done
	return err
}
