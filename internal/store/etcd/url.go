package etcd

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tether-net/tether/internal/store"
)

// Scheme is the cluster-store URL scheme of this backend.
const Scheme = "etcd"

// DefaultPort is added to an endpoint given without a port.
const DefaultPort = "2379"

// Docker's cluster-store-opts keys for TLS to the store.
const (
	OptCACertFile = "kv.cacertfile"
	OptCertFile   = "kv.certfile"
	OptKeyFile    = "kv.keyfile"
)

// ParseURL reads Docker's cluster-store form and cluster-store-opts:
//
//	etcd://host[:port][,host[:port]...][/prefix]
//
// Endpoints without a port get 2379; IPv6 hosts are bracketed
// ("[fd00::1]:2379"). The path becomes Config.Prefix with a trailing slash
// ("/tether/prod" -> "tether/prod/"); no path means the raw key space.
// Options under "kv." must be kv.cacertfile, kv.certfile, kv.keyfile (PEM
// files, read by Open; certfile and keyfile go together); any other kv.*
// key is an error naming it. Keys outside kv. (Docker's discovery.*) are not
// the store's and are ignored. Timeouts and credentials keep their Config
// defaults.
func ParseURL(raw string, opts map[string]string) (Config, error) {
	fail := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("cluster-store %q: %s", raw, fmt.Sprintf(format, args...))
	}
	rest, ok := strings.CutPrefix(raw, Scheme+"://")
	if !ok {
		return fail("want %s://host:port[,host:port...][/prefix]", Scheme)
	}
	if i := strings.IndexAny(rest, "?#@ "); i >= 0 {
		return fail("unexpected %q (no user, query, fragment or spaces)", rest[i])
	}
	hosts, path, _ := strings.Cut(rest, "/")
	var cfg Config
	for h := range strings.SplitSeq(hosts, ",") {
		ep, err := endpoint(h)
		if err != nil {
			return fail("%v", err)
		}
		cfg.Endpoints = append(cfg.Endpoints, ep)
	}
	prefix, err := pathPrefix(path)
	if err != nil {
		return fail("%v", err)
	}
	cfg.Prefix = prefix
	if err := cfg.setOptions(opts); err != nil {
		return Config{}, fmt.Errorf("cluster-store-opts: %w", err)
	}
	return cfg, nil
}

// endpoint checks one "host[:port]" and adds the default port.
func endpoint(h string) (string, error) { return store.HostPort(h, DefaultPort, "endpoint") }

// pathPrefix turns "/a/b/" or "a/b" into "a/b/"; "" stays "".
func pathPrefix(path string) (string, error) {
	path = strings.Trim(path, "/")
	if path == "" {
		return "", nil
	}
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("prefix %q: empty, . or .. segment", path)
		}
	}
	return path + "/", nil
}

// setOptions applies the kv.* cluster-store-opts.
func (c *Config) setOptions(opts map[string]string) error {
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !strings.HasPrefix(k, "kv.") {
			continue
		}
		v := opts[k]
		if v == "" {
			return fmt.Errorf("%s: empty value", k)
		}
		switch k {
		case OptCACertFile:
			c.CACertFile = v
		case OptCertFile:
			c.CertFile = v
		case OptKeyFile:
			c.KeyFile = v
		default:
			return fmt.Errorf("unknown option %q (etcd knows %s, %s, %s)", k, OptCACertFile, OptCertFile, OptKeyFile)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fmt.Errorf("%s and %s go together", OptCertFile, OptKeyFile)
	}
	return nil
}
