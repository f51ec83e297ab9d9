package zk

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tether-net/tether/internal/store"
)

// Scheme is the cluster-store URL scheme of this backend.
const Scheme = "zk"

// DefaultPort is added to a server given without a port.
const DefaultPort = "2181"

// ParseURL reads Docker's cluster-store form and cluster-store-opts:
//
//	zk://host[:port][,host[:port]...][/prefix]
//
// Servers without a port get 2181; IPv6 hosts are bracketed
// ("[fd00::1]:2181"). The path is the root znode ("/tether/prod" ->
// /tether/prod); no path means /tether. TLS (kv.cacertfile, kv.certfile,
// kv.keyfile) is not supported for zk:// and is refused, as is any other
// kv.* key; keys outside kv. (Docker's discovery.*) are not the store's and
// are ignored.
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
		srv, err := server(h)
		if err != nil {
			return fail("%v", err)
		}
		cfg.Servers = append(cfg.Servers, srv)
	}
	cfg.Prefix = strings.Trim(path, "/")
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if err := checkPrefix(cfg.Prefix); err != nil {
		return fail("%v", err)
	}
	if err := checkOptions(opts); err != nil {
		return Config{}, fmt.Errorf("cluster-store-opts: %w", err)
	}
	return cfg, nil
}

// server checks one "host[:port]" and adds the default port.
func server(h string) (string, error) { return store.HostPort(h, DefaultPort, "server") }

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
