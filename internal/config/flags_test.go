package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/spf13/pflag"
)

// parse registers the flags with defaultFile as --config-file's default and
// parses args.
func parse(t *testing.T, defaultFile string, args ...string) *Flags {
	t.Helper()
	fs := pflag.NewFlagSet("tether", pflag.ContinueOnError)
	f := registerFlags(fs, defaultFile)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return f
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "daemon.json")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFlagAliases(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "daemon.json")
	tests := []struct {
		args  []string
		check func(c *Config) bool
	}{
		{[]string{"-b", "br0"}, func(c *Config) bool { return c.Bridge == "br0" }},
		{[]string{"-H", "unix:///a.sock", "--host", "unix:///b.sock"},
			func(c *Config) bool { return reflect.DeepEqual(c.Hosts, []string{"unix:///a.sock", "unix:///b.sock"}) }},
		{[]string{"-D"}, func(c *Config) bool { return c.Debug && c.LogLevel == "debug" }},
		{[]string{"-G", "tether"}, func(c *Config) bool { return c.Group == "tether" }},
		{[]string{"--group", "adm"}, func(c *Config) bool { return c.Group == "adm" }},
		{[]string{"-H", "tcp://0.0.0.0", "--tls=false"}, func(c *Config) bool {
			return reflect.DeepEqual(c.Hosts, []string{"tcp://0.0.0.0:2375"}) && c.PlainTCP() && !c.TLSOn()
		}},
		{[]string{"--host", "tcp://:2376", "--tlsverify", "--tlscacert", "/t/ca.pem", "--tlscert", "/t/cert.pem", "--tlskey", "/t/key.pem"},
			func(c *Config) bool {
				return reflect.DeepEqual(c.Hosts, []string{"tcp://127.0.0.1:2376"}) && c.TLSOn() && c.VerifyClients() &&
					c.TLSCACert == "/t/ca.pem" && c.TLSCert == "/t/cert.pem" && c.TLSKey == "/t/key.pem"
			}},
		{[]string{"-H", "fd://", "--tls", "--tlscert", "/t/cert.pem", "--tlskey", "/t/key.pem"},
			func(c *Config) bool { return c.Hosts[0] == "fd://" && c.TLSOn() && !c.VerifyClients() }},
		{[]string{"-p", "/run/x.pid"}, func(c *Config) bool { return c.Pidfile == "/run/x.pid" }},
		{[]string{"-l", "error"}, func(c *Config) bool { return c.LogLevel == "error" }},
		{[]string{"--icc=false"}, func(c *Config) bool { return !c.ICC }},
		{[]string{"--dns", "8.8.8.8,8.8.4.4", "--dns", "1.1.1.1"}, func(c *Config) bool { return len(c.DNS) == 3 }},
		{[]string{"--dns-opt", "ndots:2", "--label", "a=b", "--dns-search", "example.com"},
			func(c *Config) bool {
				return c.DNSOpts[0] == "ndots:2" && c.Labels[0] == "a=b" && c.DNSSearch[0] == "example.com"
			}},
		{[]string{"--default-address-pool", "base=10.10.0.0/16,size=24", "--default-address-pool", "size=20,base=10.20.0.0/16"},
			func(c *Config) bool { return len(c.DefaultAddressPools) == 2 && c.DefaultAddressPools[1].Size == 20 }},
		{[]string{"--ipv6", "--fixed-cidr-v6", "fd00:1::/64", "--bip6", "fd00:1::1/64", "--default-gateway-v6", "fd00:1::1"},
			func(c *Config) bool {
				return c.IPv6 && c.FixedCIDRv6.String() == "fd00:1::/64" && c.BIP6.String() == "fd00:1::1/64" &&
					c.DefaultGatewayV6.String() == "fd00:1::1" && c.IP6Tables
			}},
		{[]string{"--ip6tables=false"}, func(c *Config) bool { return c.IPTables && !c.IP6Tables }},
		{[]string{"--iptables=false"}, func(c *Config) bool { return !c.IPTables && !c.IP6Tables }},
		{[]string{"--default-address-pool", "base=fd00:2::/48,size=64"},
			func(c *Config) bool {
				return c.DefaultAddressPools[0].Base.String() == "fd00:2::/48" && c.DefaultAddressPools[0].Size == 64
			}},
	}
	for _, tt := range tests {
		c, err := parse(t, missing, tt.args...).Load()
		if err != nil {
			t.Fatalf("%q: %v", tt.args, err)
		}
		if !tt.check(c) {
			t.Errorf("%q: unexpected config %+v", tt.args, c)
		}
	}
}

func TestFlagSyntaxRefusedAtParse(t *testing.T) {
	for _, args := range [][]string{{"--mtu", "x"}, {"--icc=maybe"}, {"--tls=maybe"}, {"--tlsverify=2"}, {"--cluster-store-opt", "novalue"}, {"--default-address-pool", "10.0.0.0/8"}, {"--ipv6=maybe"}, {"--ip6tables=2"}} {
		fs := pflag.NewFlagSet("tether", pflag.ContinueOnError)
		fs.SetOutput(new(nopWriter))
		RegisterFlags(fs)
		if err := fs.Parse(args); err == nil {
			t.Errorf("%q: parsed without error", args)
		}
	}
}

type nopWriter struct{}

func (*nopWriter) Write(p []byte) (int, error) { return len(p), nil }

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "daemon.json")

	if _, err := parse(t, missing).Load(); err != nil {
		t.Errorf("missing file at default path: %v", err)
	}
	_, err := parse(t, missing, "--config-file", missing).Load()
	wantErr(t, err, "read config file", missing)

	good := writeFile(t, `{"mtu": 1400}`)
	c, err := parse(t, missing, "--config-file", good, "--bip", "10.1.0.1/24").Load()
	if err != nil || c.MTU != 1400 || c.BIP != "10.1.0.1/24" {
		t.Errorf("file plus flag: %+v, %v", c, err)
	}

	c, err = parse(t, good).Load()
	if err != nil || c.MTU != 1400 {
		t.Errorf("file at default path: %+v, %v", c, err)
	}

	_, err = parse(t, good, "--mtu", "9000").Load()
	wantErr(t, err, "mtu: (from flag: 9000, from file: 1400)")

	bad := writeFile(t, `{"mtu": 1400,}`)
	_, err = parse(t, missing, "--config-file", bad).Load()
	wantErr(t, err, bad, "invalid JSON")
}

func TestDefaultsTable(t *testing.T) {
	fs := pflag.NewFlagSet("tether", pflag.ContinueOnError)
	RegisterFlags(fs)
	for _, o := range options {
		fl := fs.Lookup(o.flag)
		if fl == nil || fl.Shorthand != o.short {
			t.Errorf("flag --%s not registered as in the table", o.flag)
		}
	}
	if fs.Lookup("config-file").DefValue != DefaultConfigFile {
		t.Errorf("--config-file default %q", fs.Lookup("config-file").DefValue)
	}
}
