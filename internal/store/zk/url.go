package zk

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tether-net/tether/internal/store"
)

// Scheme is the cluster-store URL scheme of this backend.
const Scheme = store.SchemeZK

// DefaultPort is added to a server given without a port.
const DefaultPort = store.DefaultPortZK

// ParseURL reads Docker's cluster-store form and cluster-store-opts:
//
//	zk://host[:port][,host[:port]...][/prefix]
//
// The URL is taken apart by store.ParseURL (its rules: servers without a
// port get 2181, IPv6 hosts are bracketed "[fd00::1]:2181", no user, query
// or fragment, no empty, . or .. prefix segment). The path is the root
// znode ("/tether/prod" -> /tether/prod; no path means /tether); beyond the
// URL rules it must pass checkPrefix (safe bytes, not /zookeeper). TLS
// (kv.cacertfile, kv.certfile, kv.keyfile) is not supported for zk:// and
// is refused, as is any other kv.* key; keys outside kv. (Docker's
// discovery.*) are not the store's and are ignored.
func ParseURL(raw string, opts map[string]string) (Config, error) {
	u, err := store.ParseURL(raw, store.ZKURL)
	if err != nil {
		return Config{}, fmt.Errorf("cluster-store %q: %w", raw, err)
	}
	cfg := Config{Servers: u.Endpoints, Prefix: u.Prefix}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if err := checkPrefix(cfg.Prefix); err != nil {
		return Config{}, fmt.Errorf("cluster-store %q: %w", raw, err)
	}
	if err := checkOptions(opts); err != nil {
		return Config{}, fmt.Errorf("cluster-store-opts: %w", err)
	}
	return cfg, nil
}

// checkOptions refuses every kv.* option: zk:// has none (TLS to
// ZooKeeper needs its Netty secure port and is not supported).
func checkOptions(opts map[string]string) error {
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch {
		case !strings.HasPrefix(k, "kv."):
		case k == "kv.cacertfile" || k == "kv.certfile" || k == "kv.keyfile":
			return fmt.Errorf("%s: TLS is not supported for zk:// (use etcd:// for a TLS store)", k)
		default:
			return fmt.Errorf("unknown option %q (zk:// takes no kv.* options)", k)
		}
	}
	return nil
}
