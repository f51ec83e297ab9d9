package store

import (
	"slices"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		raw       string
		scheme    string
		endpoints []string
		prefix    string
	}{
		{"etcd://10.0.0.1:2379", "etcd", []string{"10.0.0.1:2379"}, ""},
		{"etcd://h1", "etcd", []string{"h1:2379"}, ""},
		{"zk://h1", "zk", []string{"h1:2181"}, ""},
		{"etcd://h1:2379,h2:12379,h3", "etcd", []string{"h1:2379", "h2:12379", "h3:2379"}, ""},
		{"etcd://h1/", "etcd", []string{"h1:2379"}, ""},
		{"etcd://h1//tether/prod//", "etcd", []string{"h1:2379"}, "tether/prod"},
		{"zk://[fd00::1]:2181,[::1]/x", "zk", []string{"[fd00::1]:2181", "[::1]:2181"}, "x"},
	}
	for _, tc := range tests {
		u, err := ParseURL(tc.raw, URLSchemes...)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.raw, err)
			continue
		}
		if u.Scheme != tc.scheme || !slices.Equal(u.Endpoints, tc.endpoints) || u.Prefix != tc.prefix {
			t.Errorf("ParseURL(%q) = %+v, want %s %q prefix %q", tc.raw, u, tc.scheme, tc.endpoints, tc.prefix)
		}
	}
}

// TestParseURLRejects holds the rules of the one parser. Before it there
// were three (config.ClusterStoreURL, etcd.ParseURL, zk.ParseURL); the
// configuration check accepted what the backends then refused at start.
// The stricter rule won; the rows marked "was accepted by config" failed
// only when the daemon opened the store before.
func TestParseURLRejects(t *testing.T) {
	tests := []struct {
		raw     string
		schemes []URLScheme
		want    string
	}{
		{"", URLSchemes, "not a URL (want etcd://host:port[,host:port...][/prefix] or zk://host:port"},
		{"h1:2379", []URLScheme{EtcdURL}, "not a URL (want etcd://host:port"},
		{"redis://h1", URLSchemes, `unknown scheme "redis"`},
		{"zk://h1", []URLScheme{EtcdURL}, `unknown scheme "zk" (want etcd://`},
		{"ETCD://h1", URLSchemes, `unknown scheme "ETCD"`},
		{"consul://h1:8500", URLSchemes, `unknown scheme "consul"`},
		{"etcd://", URLSchemes, "empty host"},
		{"etcd:///p", URLSchemes, "empty host"},
		{"etcd://h1,,h2", URLSchemes, "empty host"},
		{"zk://:2181", URLSchemes, `server ":2181": empty host`},
		{"etcd://:2379", URLSchemes, `endpoint ":2379": empty host`},
		{"etcd://h1:0", URLSchemes, `port "0" is not 1-65535`},
		{"etcd://fd00::1", URLSchemes, "bracket IPv6 addresses"},
		{"etcd://[not-ip]:2379", URLSchemes, "is not an IPv6 address"},
		{"etcd://user:pw@h1", URLSchemes, `unexpected '@'`},      // was accepted by config
		{"zk://h1/p?x=1", URLSchemes, `unexpected '?'`},          // was accepted by config
		{"etcd://h1/p#frag", URLSchemes, `unexpected '#'`},       // was accepted by config
		{"etcd://h1 ,h2", URLSchemes, `unexpected ' '`},          // was accepted by config
		{"etcd://h1\t", URLSchemes, `unexpected '\t'`},           // was accepted by all three
		{"zk://]", URLSchemes, `"]" is not a host name`},         // was accepted by all three (found by FuzzParseURL)
		{"etcd://h%41", URLSchemes, `"h%41" is not a host name`}, // was accepted by all three
		{"etcd://h1/a//b", URLSchemes, "empty, . or .. segment"}, // was accepted by config
		{"zk://h1/a/../b", URLSchemes, "empty, . or .. segment"}, // was accepted by config
		{"etcd://h1/./b", URLSchemes, "empty, . or .. segment"},  // was accepted by config
	}
	for _, tc := range tests {
		u, err := ParseURL(tc.raw, tc.schemes...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseURL(%q) = %+v, %v; want an error containing %q", tc.raw, u, err, tc.want)
		}
	}
}

// FuzzParseURL: an accepted URL has a known scheme, at least one endpoint,
// each a host:port with a port in 1-65535, and a prefix with no empty, .
// or .. segment.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"etcd://h1:2379,h2/p/", "zk://[::1]", "etcd://", "etcd://h:0", "zk://h/a/../b", "x://h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURL(s, URLSchemes...)
		if err != nil {
			return
		}
		if u.Scheme != SchemeEtcd && u.Scheme != SchemeZK || len(u.Endpoints) == 0 {
			t.Fatalf("ParseURL(%q) = %+v", s, u)
		}
		for _, ep := range u.Endpoints {
			if _, err := HostPort(ep, "1", "endpoint"); err != nil {
				t.Fatalf("ParseURL(%q): endpoint %q does not parse again: %v", s, ep, err)
			}
		}
		if u.Prefix != "" {
			for _, seg := range strings.Split(u.Prefix, "/") {
				if seg == "" || seg == "." || seg == ".." {
					t.Fatalf("ParseURL(%q): prefix %q", s, u.Prefix)
				}
			}
		}
	})
}
