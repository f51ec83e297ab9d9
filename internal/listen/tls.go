package listen

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// TLSFiles names the PEM files of the API's TLS setup, by daemon.json key.
type TLSFiles struct {
	CA   string // tlscacert: CA that signs client certificates
	Cert string // tlscert: the daemon's certificate (chain)
	Key  string // tlskey: its private key
}

// ServerTLS builds the TLS configuration of the TCP listeners: the daemon's
// certificate, TLS 1.2 or later, HTTP/1.1 only (attach and exec take over
// the connection, which HTTP/2 cannot hand out). With verify every client
// must present a certificate signed by the CA in files.CA
// (tls.RequireAndVerifyClientCert); without it any client may connect.
// Errors name the key whose file is at fault.
func ServerTLS(files TLSFiles, verify bool) (*tls.Config, error) {
	cert, err := loadKeyPair(files.Cert, files.Key)
	if err != nil {
		return nil, err
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"http/1.1"},
	}
	if !verify {
		return c, nil
	}
	pool, err := loadCA(files.CA)
	if err != nil {
		return nil, err
	}
	c.ClientCAs = pool
	c.ClientAuth = tls.RequireAndVerifyClientCert
	return c, nil
}

// loadKeyPair reads tlscert and tlskey and checks that they belong together.
func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := readPEM("tlscert", certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readPEM("tlskey", keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tlscert %q, tlskey %q: %w", certFile, keyFile, err)
	}
	return cert, nil
}

// loadCA reads tlscacert into a pool of its own (the system's CAs are not
// trusted for client certificates).
func loadCA(file string) (*x509.CertPool, error) {
	data, err := readPEM("tlscacert", file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("tlscacert: no PEM certificate in %q", file)
	}
	return pool, nil
}

func readPEM(key, file string) ([]byte, error) {
	if file == "" {
		return nil, fmt.Errorf("%s: no file given", key)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err) // tlscert: open /x: no such file or directory
	}
	return data, nil
}
