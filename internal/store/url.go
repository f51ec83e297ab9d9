package store

import (
	"fmt"
	"strings"
)

// The cluster-store URL schemes Tether has a backend for, and the port a
// host given without one gets. The backends (internal/store/etcd,
// internal/store/zk) and the configuration check read them from here.
const (
	SchemeEtcd      = "etcd"
	DefaultPortEtcd = "2379"
	SchemeZK        = "zk"
	DefaultPortZK   = "2181"
)

// URLScheme describes one cluster-store URL scheme for ParseURL.
type URLScheme struct {
	Name        string // "etcd"
	DefaultPort string // added to a host given without a port
	Host        string // what a host is called in errors: "endpoint", "server"
}

// The schemes of the backends.
var (
	EtcdURL = URLScheme{Name: SchemeEtcd, DefaultPort: DefaultPortEtcd, Host: "endpoint"}
	ZKURL   = URLScheme{Name: SchemeZK, DefaultPort: DefaultPortZK, Host: "server"}
	// URLSchemes are all schemes with a backend, for a caller that takes
	// any of them (the configuration check, the daemon's dispatch).
	URLSchemes = []URLScheme{EtcdURL, ZKURL}
)

// URL is a cluster-store URL taken apart.
type URL struct {
	Scheme string
	// Endpoints are "host:port", each checked by HostPort, in the order
	// given, the scheme's default port added where none was given.
	Endpoints []string
	// Prefix is the path without its leading and trailing slashes ("" when
	// there is none). Each backend decides what it means (etcd: a key
	// prefix, ZooKeeper: a root znode) and what else a prefix must satisfy.
	Prefix string
}

// ParseURL is the one reader of Docker's cluster-store form:
//
//	SCHEME://host[:port][,host[:port]...][/prefix]
//
// SCHEME must be one of schemes (matched exactly: "ETCD://" is not etcd).
// Hosts are checked by HostPort (IPv6 in brackets; the scheme's default
// port added). No user, query, fragment or white space is allowed
// (user:pw@, ?, #, ' ' are refused: Docker's stores took none, and a
// password in a URL would end up in logs). The prefix may not have an
// empty, "." or ".." segment. Errors do not repeat raw; callers wrap them
// with it.
func ParseURL(raw string, schemes ...URLScheme) (URL, error) {
	name, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return URL{}, fmt.Errorf("not a URL (%s)", want(schemes))
	}
	var sc *URLScheme
	for i := range schemes {
		if schemes[i].Name == name {
			sc = &schemes[i]
		}
	}
	if sc == nil {
		return URL{}, fmt.Errorf("unknown scheme %q (%s)", name, want(schemes))
	}
	if i := strings.IndexAny(rest, "?#@ \t\r\n"); i >= 0 {
		return URL{}, fmt.Errorf("unexpected %q (no user, query, fragment or spaces)", rest[i])
	}
	hosts, path, _ := strings.Cut(rest, "/")
	u := URL{Scheme: sc.Name}
	for _, h := range strings.Split(hosts, ",") {
		hp, err := HostPort(h, sc.DefaultPort, sc.Host)
		if err != nil {
			return URL{}, err
		}
		u.Endpoints = append(u.Endpoints, hp)
	}
	u.Prefix = strings.Trim(path, "/")
	if u.Prefix != "" {
		for _, seg := range strings.Split(u.Prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return URL{}, fmt.Errorf("prefix %q: empty, . or .. segment", u.Prefix)
			}
		}
	}
	return u, nil
}

// want describes the accepted forms for an error:
// "want etcd://host:port[,host:port...][/prefix] or zk://...".
func want(schemes []URLScheme) string {
	forms := make([]string, len(schemes))
	for i, s := range schemes {
		forms[i] = s.Name + "://host:port[,host:port...][/prefix]"
	}
	return "want " + strings.Join(forms, " or ")
}
