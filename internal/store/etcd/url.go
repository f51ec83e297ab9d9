package etcd

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tether-net/tether/internal/store"
)

// Scheme is the cluster-store URL scheme of this backend.
const Scheme = store.SchemeEtcd

// DefaultPort is added to an endpoint given without a port.
const DefaultPort = store.DefaultPortEtcd

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
// The URL is taken apart by store.ParseURL (its rules: endpoints without a
// port get 2379, IPv6 hosts are bracketed "[fd00::1]:2379", no user, query
// or fragment, no empty, . or .. prefix segment). The path becomes
// Config.Prefix with a trailing slash ("/tether/prod" -> "tether/prod/");
// no path means the raw key space.
// Options under "kv." must be kv.cacertfile, kv.certfile, kv.keyfile (PEM
// files, read by Open; certfile and keyfile go together); any other kv.*
// key is an error naming it. Keys outside kv. (Docker's discovery.*) are not
// the store's and are ignored. Timeouts and credentials keep their Config
// defaults.
func ParseURL(raw string, opts map[string]string) (Config, error) {
	u, err := store.ParseURL(raw, store.EtcdURL)
	if err != nil {
		return Config{}, fmt.Errorf("cluster-store %q: %w", raw, err)
	}
	cfg := Config{Endpoints: u.Endpoints}
	if u.Prefix != "" {
		cfg.Prefix = u.Prefix + "/"
	}
	if err := cfg.setOptions(opts); err != nil {
		return Config{}, fmt.Errorf("cluster-store-opts: %w", err)
	}
	return cfg, nil
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
