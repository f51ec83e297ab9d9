package etcd

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		url       string
		endpoints []string
		prefix    string
	}{
		{"etcd://10.0.0.1:2379", []string{"10.0.0.1:2379"}, ""},
		{"etcd://h1", []string{"h1:2379"}, ""},
		{"etcd://h1:2379,h2:12379,h3", []string{"h1:2379", "h2:12379", "h3:2379"}, ""},
		{"etcd://h1:2379/", []string{"h1:2379"}, ""},
		{"etcd://h1:2379/tether", []string{"h1:2379"}, "tether/"},
		{"etcd://h1:2379/tether/prod/", []string{"h1:2379"}, "tether/prod/"},
		{"etcd://[fd00::1]:2379,[::1]", []string{"[fd00::1]:2379", "[::1]:2379"}, ""},
		{"etcd://etcd-0.etcd.svc:2379/x", []string{"etcd-0.etcd.svc:2379"}, "x/"},
	}
	for _, tc := range tests {
		cfg, err := ParseURL(tc.url, nil)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.url, err)
			continue
		}
		if fmt.Sprint(cfg.Endpoints) != fmt.Sprint(tc.endpoints) || cfg.Prefix != tc.prefix {
			t.Errorf("ParseURL(%q) = %q prefix %q, want %q prefix %q", tc.url, cfg.Endpoints, cfg.Prefix, tc.endpoints, tc.prefix)
		}
	}
}

func TestParseURLOptions(t *testing.T) {
	opts := map[string]string{
		"kv.cacertfile": "/etc/tether/ca.pem", "kv.certfile": "/etc/tether/cert.pem", "kv.keyfile": "/etc/tether/key.pem",
		"discovery.heartbeat": "20", // Docker's, not the store's
	}
	cfg, err := ParseURL("etcd://h:2379", opts)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CACertFile != "/etc/tether/ca.pem" || cfg.CertFile != "/etc/tether/cert.pem" || cfg.KeyFile != "/etc/tether/key.pem" {
		t.Fatalf("TLS files = %q %q %q", cfg.CACertFile, cfg.CertFile, cfg.KeyFile)
	}
	if cfg, err := ParseURL("etcd://h", map[string]string{"kv.cacertfile": "/ca.pem"}); err != nil || cfg.CACertFile != "/ca.pem" {
		t.Fatalf("CA alone: %+v, %v", cfg, err)
	}
}

func TestParseURLRejects(t *testing.T) {
	tests := []struct {
		url  string
		opts map[string]string
		want string
	}{
		{"", nil, "want etcd://host:port"},
		{"h1:2379", nil, "want etcd://host:port"},
		{"zk://h1:2181", nil, "want etcd://host:port"},
		{"consul://h1:8500", nil, "want etcd://host:port"},
		{"ETCD://h1", nil, "want etcd://host:port"},
		{"etcd://", nil, "empty host"},
		{"etcd:///prefix", nil, "empty host"},
		{"etcd://h1,,h2", nil, "empty host"},
		{"etcd://h1,", nil, "empty host"},
		{"etcd://:2379", nil, `endpoint ":2379": empty host`},
		{"etcd://h1:", nil, `port "" is not 1-65535`},
		{"etcd://h1:0", nil, `port "0" is not 1-65535`},
		{"etcd://h1:65536", nil, `port "65536" is not 1-65535`},
		{"etcd://h1:http", nil, `port "http" is not 1-65535`},
		{"etcd://fd00::1", nil, "bracket IPv6 addresses"},
		{"etcd://[fd00::1", nil, `endpoint "[fd00::1"`},
		{"etcd://[not-ip]:2379", nil, "is not an IPv6 address"},
		{"etcd://user:pw@h1", nil, `unexpected '@'`},
		{"etcd://h1/p?x=1", nil, `unexpected '?'`},
		{"etcd://h1/p#frag", nil, `unexpected '#'`},
		{"etcd://h1 ,h2", nil, `unexpected ' '`},
		{"etcd://h1/a//b", nil, "empty, . or .. segment"},
		{"etcd://h1/a/../b", nil, "empty, . or .. segment"},
		{"etcd://h1", map[string]string{"kv.path": "x"}, `cluster-store-opts: unknown option "kv.path"`},
		{"etcd://h1", map[string]string{"kv.CAcertfile": "x"}, `unknown option "kv.CAcertfile"`},
		{"etcd://h1", map[string]string{"kv.cacertfile": ""}, "kv.cacertfile: empty value"},
		{"etcd://h1", map[string]string{"kv.certfile": "/c.pem"}, "kv.certfile and kv.keyfile go together"},
		{"etcd://h1", map[string]string{"kv.keyfile": "/k.pem"}, "kv.certfile and kv.keyfile go together"},
	}
	for _, tc := range tests {
		_, err := ParseURL(tc.url, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseURL(%q, %v): err = %v, want it to contain %q", tc.url, tc.opts, err, tc.want)
		}
	}
}
