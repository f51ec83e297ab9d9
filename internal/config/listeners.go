package config

// API listeners and their TLS, as dockerd has them: tcp:// needs TLS
// (tlscert and tlskey) unless tls is false explicitly; tlsverify implies tls
// and needs tlscacert. Unlike dockerd, Tether has no default certificate
// paths (dockerd falls back to ~/.docker/*.pem): every file is named.

import (
	"errors"
	"fmt"

	"github.com/tether-net/tether/internal/listen"
)

// TLSOn reports whether TCP listeners serve TLS: tls or tlsverify is true,
// or a certificate is given, and tls is not false.
func (c *Config) TLSOn() bool {
	if isFalsePtr(c.TLS) {
		return false
	}
	return isTruePtr(c.TLS) || isTruePtr(c.TLSVerify) || c.TLSCert != "" || c.TLSKey != ""
}

// VerifyClients reports whether TCP listeners require client certificates
// signed by TLSCACert (tlsverify: true).
func (c *Config) VerifyClients() bool { return isTruePtr(c.TLSVerify) }

// PlainTCP reports whether TCP listeners may serve without TLS: only when
// tls is false explicitly.
func (c *Config) PlainTCP() bool { return isFalsePtr(c.TLS) }

func isTruePtr(b *bool) bool  { return b != nil && *b }
func isFalsePtr(b *bool) bool { return b != nil && !*b }

// defaultPort is the port of a tcp:// entry without one: Docker's 2376
// with TLS, 2375 without.
func (c *Config) defaultPort() int {
	if c.TLSOn() {
		return listen.PortTLS
	}
	return listen.PortPlain
}

// normalizeHosts writes every valid hosts entry in canonical form
// (tcp://host gets its default port); checkHosts reports the others.
func normalizeHosts(c *Config) {
	for i, s := range c.Hosts {
		if s == "unix://" {
			c.Hosts[i] = DefaultHost
			continue
		}
		if h, err := listen.ParseHost(s, c.defaultPort()); err == nil {
			c.Hosts[i] = h.String()
		}
	}
}

// checkHosts parses the entries and refuses TCP without TLS unless tls is
// false explicitly.
func checkHosts(c *Config) error {
	for _, s := range c.Hosts {
		h, err := listen.ParseHost(s, c.defaultPort())
		if err != nil {
			return err
		}
		if h.Proto == "tcp" && !c.TLSOn() && !c.PlainTCP() {
			return fmt.Errorf("%s would serve the API unencrypted to anyone who can reach it (root on this host): "+
				"give tlscert and tlskey (and tlsverify with tlscacert to require client certificates), or --tls=false (\"tls\": false) to accept that", h)
		}
	}
	return nil
}

// checkTLSOff refuses tls: false together with anything asking for TLS.
func checkTLSOff(c *Config) error {
	if !isFalsePtr(c.TLS) {
		return nil
	}
	if isTruePtr(c.TLSVerify) {
		return errors.New("false, but tlsverify is true (tlsverify implies tls)")
	}
	if c.TLSCert != "" || c.TLSKey != "" || c.TLSCACert != "" {
		return errors.New("false turns TLS off, but tlscert, tlskey or tlscacert is given: drop one or the other")
	}
	return nil
}

// tlsNeedsKeyPair wants the daemon's certificate when tls (key "tls") or
// tlsverify (key "tlsverify") is true.
func tlsNeedsKeyPair(on func(c *Config) *bool) func(c *Config) error {
	return func(c *Config) error {
		if isTruePtr(on(c)) && c.TLSCert == "" && c.TLSKey == "" {
			return errors.New("true needs tlscert and tlskey, the daemon's certificate and its key")
		}
		return nil
	}
}

// checkTLSCert and checkTLSKey want tlscert and tlskey together.
func checkTLSCert(c *Config) error {
	if c.TLSCert == "" && c.TLSKey != "" {
		return errors.New("not given, but tlskey is: both are needed")
	}
	return nil
}

func checkTLSKey(c *Config) error {
	if c.TLSKey == "" && c.TLSCert != "" {
		return errors.New("not given, but tlscert is: both are needed")
	}
	return nil
}

// checkTLSCACert wants the client CA when tlsverify is true.
func checkTLSCACert(c *Config) error {
	if isTruePtr(c.TLSVerify) && c.TLSCACert == "" {
		return errors.New("not given, but tlsverify is true and needs the CA that signs client certificates")
	}
	return nil
}

// tlsWarnings notes settings that do less than they seem to.
func tlsWarnings(c *Config) []string {
	if c.TLSCACert != "" && !c.VerifyClients() {
		return []string{"tlscacert is given but tlsverify is not true: clients are not asked for certificates"}
	}
	return nil
}
