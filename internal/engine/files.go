package engine

import (
	"fmt"
	"net/netip"

	"github.com/tether-net/tether/internal/resolvconf"
	"github.com/tether-net/tether/internal/sandbox"
)

// A sandbox's /etc/hosts, /etc/resolv.conf and /etc/hostname are written
// by internal/sandbox (Files); the engine decides their content from the
// sandbox's endpoints and the daemon's DNS settings.

func (e *Engine) files() sandbox.Files { return sandbox.Files{Dir: e.sbDir} }

// sandboxFiles maps each file's target inside the sandbox to its path.
func (e *Engine) sandboxFiles(id string) map[string]string { return e.files().Paths(id) }

// writeFiles (re)writes a sandbox's hosts, resolv.conf and hostname.
func (e *Engine) writeFiles(sb *Sandbox) error {
	e.mu.Lock()
	embedded := e.usesEmbeddedDNS(sb)
	e.mu.Unlock()
	c := sandbox.DNSConfig{Servers: e.cfg.DNS, Search: e.cfg.DNSSearch, Options: e.cfg.DNSOpts}
	err := e.files().Write(sb.ID, sandbox.Content{
		Hosts:      hostsFile(sb),
		ResolvConf: sandbox.ResolvConf(embedded, c, resolvconf.Host(resolvconf.HostPath, resolvconf.SystemdPath)),
		Hostname:   sb.Hostname,
	})
	if err != nil {
		return fmt.Errorf("sandbox %q: %w", sb.Name, err)
	}
	return nil
}

// hostsFile is the sandbox's /etc/hosts (sandbox.Hosts) for its addresses.
func hostsFile(sb *Sandbox) []byte {
	var addrs []netip.Addr
	for _, ep := range sb.Endpoints {
		if ep.Address.IsValid() {
			addrs = append(addrs, ep.Address.Addr())
		}
		if ep.Address6.IsValid() {
			addrs = append(addrs, ep.Address6.Addr())
		}
	}
	return sandbox.Hosts(sb.Hostname, sb.Name, addrs)
}
