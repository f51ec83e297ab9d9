package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/engine"
	"github.com/tether-net/tether/internal/firewall"
	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/etcd"
	"github.com/tether-net/tether/internal/store/zk"
)

// openCluster connects to the cluster store and prepares this node's
// registration (started by the engine). Without cluster-store it returns
// nil. The store being down is not fatal: the node registers when it
// comes back, and until then global attaches fail with a clear error.
func openCluster(ctx context.Context, cfg *config.Config, log *slog.Logger) (*cluster.Cluster, func(), error) {
	if cfg.ClusterStore == "" {
		return nil, func() {}, nil
	}
	self, err := clusterSelf(cfg)
	if err != nil {
		return nil, nil, err
	}
	if self.Addr.Is6() && cfg.IPTables && !cfg.IP6Tables {
		log.Warn("the underlay is IPv6 and ip6tables is false: VXLAN is accepted from any IPv6 source (no table ip6 tether_vxlan)", "advertise", self.Addr)
	}
	// Parse now (a bad URL or option stops the start); connect lazily.
	if _, err := openClusterStore(ctx, cfg, true); err != nil {
		return nil, nil, err
	}
	st := instrumentStore(&lazyStore{open: func(ctx context.Context) (store.Store, error) { return openClusterStore(ctx, cfg, false) }})
	ttl := 10 * time.Second
	if v, ok := cfg.ClusterStoreOpts["discovery.ttl"]; ok {
		n, _ := strconv.Atoi(v) // validated by config
		ttl = time.Duration(n) * time.Second
	}
	cl, err := cluster.New(cluster.Options{Store: st, Self: self, TTL: ttl, Logger: log})
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := cl.Start(rctx); err != nil {
		log.Warn("cluster store unreachable at start: global networks wait for it; local ones work", "store", cfg.ClusterStore, "err", err)
	} else {
		log.Info("cluster: node registered", "node", self.ID, "advertise", netip.AddrPortFrom(self.Addr, uint16(self.Port)), "ttl", ttl)
	}
	return cl, func() { cl.Stop(); st.Close() }, nil
}

// openVXLANGuard returns the VXLAN filter of a daemon with a cluster store
// and iptables=true (table ip tether_vxlan, and with ip6tables ip6
// tether_vxlan: VXLAN only from live cluster nodes; docs/overlay.md), else
// nil. Its socket lives as long as the process; the tables stay after it.
// An IPv6 underlay without ip6tables runs unguarded (openCluster warns).
func openVXLANGuard(cfg *config.Config, cl *cluster.Cluster) (engine.NodeFilter, error) {
	if cl == nil || !cfg.IPTables {
		return nil, nil
	}
	g, err := firewall.NewVXLANGuardWith(firewall.VXLANGuardOptions{IPv6: cfg.IP6Tables})
	if err != nil {
		return nil, fmt.Errorf("VXLAN filter: %w (iptables=false runs without firewall rules)", err)
	}
	return g, nil
}

// openClusterStore connects to the store cluster-store names; with
// parseOnly it only checks the URL and options and returns nil.
func openClusterStore(ctx context.Context, cfg *config.Config, parseOnly bool) (store.Store, error) {
	u, err := store.ParseURL(cfg.ClusterStore, store.URLSchemes...)
	if err != nil {
		return nil, fmt.Errorf("cluster-store %q: %w", cfg.ClusterStore, err)
	}
	switch u.Scheme {
	case etcd.Scheme:
		ecfg, err := etcd.ParseURL(cfg.ClusterStore, cfg.ClusterStoreOpts)
		if err != nil || parseOnly {
			return nil, err
		}
		return etcd.Open(ctx, ecfg)
	case zk.Scheme:
		zcfg, err := zk.ParseURL(cfg.ClusterStore, cfg.ClusterStoreOpts)
		if err != nil || parseOnly {
			return nil, err
		}
		return zk.Open(ctx, zcfg)
	}
	return nil, fmt.Errorf("cluster-store %q: %s:// is %w", cfg.ClusterStore, u.Scheme, config.ErrNotSupported)
}

// clusterSelf describes this node: a stable ID kept in data-root (so a
// restart is the same node), the host name, and the advertise address,
// read off the interface when cluster-advertise names one.
func clusterSelf(cfg *config.Config) (cluster.Node, error) {
	adv, err := config.ParseAdvertise(cfg.ClusterAdvertise)
	if err != nil {
		return cluster.Node{}, fmt.Errorf("cluster-advertise: %w", err)
	}
	addr := adv.Addr
	if adv.Interface != "" {
		if addr, err = interfaceAddr(adv.Interface); err != nil {
			return cluster.Node{}, fmt.Errorf("cluster-advertise %q: %w", cfg.ClusterAdvertise, err)
		}
	}
	id, err := nodeID(filepath.Join(cfg.DataRoot, "node-id"))
	if err != nil {
		return cluster.Node{}, err
	}
	host, _ := os.Hostname()
	return cluster.Node{ID: id, Name: host, Addr: addr, Port: adv.Port, StartedAt: time.Now().UTC()}, nil
}

// interfaceAddr is the address cluster-advertise IFACE:PORT stands for:
// the interface's first IPv4 address (as `ip -4 addr show IFACE` lists
// them) that is not link-local, else its first usable global IPv6 address
// (advertiseAddr).
func interfaceAddr(name string) (netip.Addr, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %s: %w", name, err)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of %s: %w", name, err)
	}
	if a, ok := advertiseAddr(addrs); ok {
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address and no global IPv6 address", name)
}

// unstable are the flags of an IPv6 address that must not become a VTEP:
// not yet usable (tentative: DAD runs; dadfailed), on its way out
// (deprecated) or short-lived by design (temporary: a privacy address).
const unstable = unix.IFA_F_TENTATIVE | unix.IFA_F_DADFAILED | unix.IFA_F_DEPRECATED | unix.IFA_F_TEMPORARY

// advertiseAddr picks the VTEP among an interface's addresses: the first
// IPv4 one that is not link-local (169.254/16); with none, the first IPv6
// one of global scope (ULA included) that is stable (no unstable flag).
// Link-local IPv6 addresses need a zone, which a VTEP cannot carry.
func advertiseAddr(addrs []netlink.Addr) (netip.Addr, bool) {
	var v6 netip.Addr
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		if ip = ip.Unmap(); ip.Is4() {
			if !ip.IsLinkLocalUnicast() {
				return ip, true
			}
			continue
		}
		if !v6.IsValid() && ip.IsGlobalUnicast() && a.Flags&unstable == 0 {
			v6 = ip
		}
	}
	return v6, v6.IsValid()
}

// nodeID reads the node's ID, creating it on first start.
func nodeID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if id := strings.TrimSpace(string(b)); len(id) == 32 {
			return id, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("node id: %w", err)
	}
	r := make([]byte, 16)
	_, _ = rand.Read(r)
	id := hex.EncodeToString(r)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("node id: %w", err)
	}
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("node id: %w", err)
	}
	return id, nil
}
