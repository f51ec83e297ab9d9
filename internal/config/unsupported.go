package config

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNotSupported marks an option Tether knows but does not implement yet.
var ErrNotSupported = errors.New("not supported yet")

// gap is one option value Tether refuses until the feature lands. Remove the
// row when it does.
type gap struct {
	key    string
	when   func(v any) bool // v is the decoded value, present only if given
	reason string
}

const (
	whyCluster  = "multi-host networking comes later"
	whyFirewall = "Tether's nftables rules are IPv4 only and never set a forward policy"
	whyPorts    = "published ports come later"
)

// gaps lists every refused value. Rows for keys without a Tether option are
// Docker networking keys Tether reads from daemon.json only to refuse them;
// giving them a zero value (false, "", 0, [], {}) is accepted.
var gaps = []gap{
	{"cluster-store", isConsul, "no Consul server can be installed here to test against; use etcd:// or zk://"},
	{"live-restore", isFalse, "Tether always keeps sandboxes across restarts"},

	{"ip-forward-no-drop", notZero, whyFirewall},
	{"userland-proxy-path", notZero, whyPorts},
	{"default-network-opts", notZero, "network driver options come later"},
	{"host-gateway-ip", notZero, "the host-gateway address comes later"},
	{"host-gateway-ips", notZero, "the host-gateway address comes later"},
	{"network-control-plane-mtu", notZero, whyCluster},
	{"network-diagnostic-port", notZero, "the network diagnostic server is not planned yet"},
	{"resolv-conf", notZero, "sandboxes get a generated resolv.conf"},
}

// dockerNetworkOnly reports whether key is a gaps row without a Tether option.
func dockerNetworkOnly(key string) bool {
	if _, ok := optionByKey[key]; ok {
		return false
	}
	for _, g := range gaps {
		if g.key == key {
			return true
		}
	}
	return false
}

// checkGaps refuses every given value that a gaps row matches.
func checkGaps(given map[string]any) error {
	var errs []error
	for _, g := range gaps {
		if v, ok := given[g.key]; ok && g.when(v) {
			errs = append(errs, fmt.Errorf("%s: %w (%s)", g.key, ErrNotSupported, g.reason))
		}
	}
	return errors.Join(errs...)
}

func given(any) bool      { return true }
func isFalse(v any) bool  { b, ok := v.(bool); return ok && !b }
func notEmpty(v any) bool { return !isEmpty(v) }
func notZero(v any) bool  { return !isZero(v) }

func isConsul(v any) bool { s, _ := v.(string); return strings.HasPrefix(s, "consul://") }
