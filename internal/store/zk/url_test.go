package zk

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		url     string
		servers []string
		prefix  string
	}{
		{"zk://10.0.0.1:2181", []string{"10.0.0.1:2181"}, "tether"},
		{"zk://h1", []string{"h1:2181"}, "tether"},
		{"zk://h1:2181,h2:12181,h3", []string{"h1:2181", "h2:12181", "h3:2181"}, "tether"},
		{"zk://h1:2181/", []string{"h1:2181"}, "tether"},
		{"zk://h1:2181/docker", []string{"h1:2181"}, "docker"},
		{"zk://h1:2181/tether/prod/", []string{"h1:2181"}, "tether/prod"},
		{"zk://[fd00::1]:2181,[::1]", []string{"[fd00::1]:2181", "[::1]:2181"}, "tether"},
		{"zk://zk-0.zk.svc:2181/x", []string{"zk-0.zk.svc:2181"}, "x"},
	}
	for _, tc := range tests {
		cfg, err := ParseURL(tc.url, map[string]string{"discovery.heartbeat": "20"})
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.url, err)
			continue
		}
		if fmt.Sprint(cfg.Servers) != fmt.Sprint(tc.servers) || cfg.Prefix != tc.prefix {
			t.Errorf("ParseURL(%q) = %q prefix %q, want %q prefix %q", tc.url, cfg.Servers, cfg.Prefix, tc.servers, tc.prefix)
		}
	}
}

func TestParseURLRejects(t *testing.T) {
	tests := []struct {
		url  string
		opts map[string]string
		want string
	}{
		{"", nil, "want zk://host:port"},
		{"h1:2181", nil, "want zk://host:port"},
		{"etcd://h1:2379", nil, "want zk://host:port"},
		{"ZK://h1", nil, "want zk://host:port"},
		{"zk://", nil, "empty host"},
		{"zk:///prefix", nil, "empty host"},
		{"zk://h1,,h2", nil, "empty host"},
		{"zk://h1,", nil, "empty host"},
		{"zk://:2181", nil, `server ":2181": empty host`},
		{"zk://h1:", nil, `port "" is not 1-65535`},
		{"zk://h1:0", nil, `port "0" is not 1-65535`},
		{"zk://h1:65536", nil, `port "65536" is not 1-65535`},
		{"zk://h1:zk", nil, `port "zk" is not 1-65535`},
		{"zk://fd00::1", nil, "bracket IPv6 addresses"},
		{"zk://[fd00::1", nil, `server "[fd00::1"`},
		{"zk://[not-ip]:2181", nil, "is not an IPv6 address"},
		{"zk://user:pw@h1", nil, `unexpected '@'`},
		{"zk://h1/p?x=1", nil, `unexpected '?'`},
		{"zk://h1/p#frag", nil, `unexpected '#'`},
		{"zk://h1 ,h2", nil, `unexpected ' '`},
		{"zk://h1/a//b", nil, "empty, . or .. segment"},
		{"zk://h1/a/../b", nil, "empty, . or .. segment"},
		{"zk://h1/zookeeper", nil, "/zookeeper is ZooKeeper's own"},
		{"zk://h1/a%2Fb", nil, `'%' is not allowed`},
		{"zk://h1", map[string]string{"kv.cacertfile": "/ca.pem"}, "kv.cacertfile: TLS is not supported for zk://"},
		{"zk://h1", map[string]string{"kv.certfile": "/c.pem", "kv.keyfile": "/k.pem"}, "kv.certfile: TLS is not supported for zk://"},
		{"zk://h1", map[string]string{"kv.keyfile": "/k.pem"}, "kv.keyfile: TLS is not supported for zk://"},
		{"zk://h1", map[string]string{"kv.path": "x"}, `cluster-store-opts: unknown option "kv.path"`},
	}
	for _, tc := range tests {
		_, err := ParseURL(tc.url, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseURL(%q, %v): err = %v, want it to contain %q", tc.url, tc.opts, err, tc.want)
		}
	}
}
