package api

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/api/types/network"

	"github.com/tether-net/tether/internal/engine"
)

// createNetworkBody mirrors Docker's network.CreateRequest with addresses as
// strings, so a bad address is reported with its field name instead of a
// bare parse error.
type createNetworkBody struct {
	Name       string
	Driver     string
	Scope      string
	EnableIPv4 *bool
	EnableIPv6 *bool
	IPAM       *struct {
		Driver  string
		Options map[string]string
		Config  []struct {
			Subnet             string
			IPRange            string
			Gateway            string
			AuxiliaryAddresses map[string]string
		}
	}
	Internal   bool
	Attachable bool
	Ingress    bool
	ConfigOnly bool
	ConfigFrom *struct{ Network string }
	Options    map[string]string
	Labels     map[string]string
}

func (s *Server) createNetwork(w http.ResponseWriter, r *http.Request) {
	var b createNetworkBody
	if !decode(w, r, &b) {
		return
	}
	spec, err := b.spec()
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	n, err := s.eng.CreateNetwork(r.Context(), spec)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, network.CreateResponse{ID: n.ID})
}

func (b *createNetworkBody) spec() (engine.NetworkSpec, error) {
	switch {
	case b.Name == "":
		return engine.NetworkSpec{}, errors.New("invalid Name: a network name is required")
	case b.Ingress:
		return engine.NetworkSpec{}, errors.New("invalid Ingress: ingress networks are not supported yet")
	case b.ConfigOnly || b.ConfigFrom != nil && b.ConfigFrom.Network != "":
		return engine.NetworkSpec{}, errors.New("invalid ConfigOnly/ConfigFrom: config-only networks are not supported yet")
	case b.Scope != "" && b.Scope != "local" && b.Scope != "global":
		return engine.NetworkSpec{}, fmt.Errorf("invalid Scope %q: local, or global (with a driver of global networks)", b.Scope)
	}
	spec := engine.NetworkSpec{
		Name: b.Name, Driver: b.Driver, Scope: b.Scope, Internal: b.Internal, Attachable: b.Attachable,
		EnableIPv6: b.EnableIPv6 != nil && *b.EnableIPv6, EnableIPv4: b.EnableIPv4, Options: b.Options, Labels: b.Labels,
	}
	if b.IPAM != nil {
		spec.IPAMDriver, spec.IPAMOptions = b.IPAM.Driver, b.IPAM.Options
		for _, c := range b.IPAM.Config {
			spec.Subnets = append(spec.Subnets, engine.SubnetSpec{Subnet: c.Subnet, IPRange: c.IPRange, Gateway: c.Gateway, Aux: c.AuxiliaryAddresses})
		}
	}
	return spec, nil
}

func (s *Server) inspectNetwork(w http.ResponseWriter, r *http.Request) {
	v, err := s.eng.Network(r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	if v.Scope == engine.ScopeGlobal {
		writeJSON(w, http.StatusOK, globalView(v))
		return
	}
	writeJSON(w, http.StatusOK, inspectView(v, true))
}

// endpointWithHost is Docker's EndpointResource plus the node it lives on
// (global networks only; a Tether extension).
type endpointWithHost struct {
	network.EndpointResource
	Host string `json:"Host"`
}

// globalInspect is a global network's inspect: Containers lists the
// endpoints of every node with the node's name, Peers the nodes (as
// Docker's overlay shows them).
type globalInspect struct {
	network.Inspect
	Containers map[string]endpointWithHost `json:"Containers"`
}

func globalView(v *engine.NetworkView) globalInspect {
	out := globalInspect{Inspect: inspectView(v, false), Containers: map[string]endpointWithHost{}}
	self := fmt.Sprintf("%s (%s)", v.Node.Name, v.Node.Addr)
	peers := map[string]network.PeerInfo{v.Node.ID: {Name: v.Node.Name, IP: v.Node.Addr}}
	for _, ep := range v.Endpoints {
		mac, _ := net.ParseMAC(ep.MAC)
		out.Containers[ep.SandboxID] = endpointWithHost{EndpointResource: network.EndpointResource{Name: ep.SandboxName,
			EndpointID: ep.ID, MacAddress: network.HardwareAddr(mac), IPv4Address: ep.Address, IPv6Address: ep.Address6}, Host: self}
	}
	for _, ep := range v.Remote {
		host := fmt.Sprintf("%s (%s)", ep.NodeName, ep.VTEP)
		if !ep.Live {
			host += " unreachable"
		} else {
			peers[ep.Node] = network.PeerInfo{Name: ep.NodeName, IP: ep.VTEP}
		}
		out.Containers[ep.SandboxID] = endpointWithHost{EndpointResource: network.EndpointResource{Name: ep.SandboxName,
			EndpointID: ep.ID, MacAddress: network.HardwareAddr(ep.HardwareAddr()), IPv4Address: ep.Address, IPv6Address: ep.Address6}, Host: host}
	}
	for _, p := range peers {
		out.Peers = append(out.Peers, p)
	}
	slices.SortFunc(out.Peers, func(a, b network.PeerInfo) int { return a.IP.Compare(b.IP) })
	return out
}

func (s *Server) listNetworks(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilters(r.URL.Query().Get("filters"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if err := f.check("dangling", "driver", "id", "label", "name", "scope", "type"); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	out := []network.Inspect{}
	for _, v := range s.eng.Networks() {
		ok, err := matchNetwork(f, v)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		if ok {
			out = append(out, inspectView(v, false))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) removeNetwork(w http.ResponseWriter, r *http.Request) {
	if err := s.eng.RemoveNetwork(r.Context(), r.PathValue("id")); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) pruneNetworks(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilters(r.URL.Query().Get("filters"))
	if err == nil {
		err = f.check("until", "label", "label!")
	}
	var until time.Time
	if err == nil {
		until, err = f.until(time.Now())
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	removed, err := s.eng.PruneNetworks(r.Context(), func(n *engine.Network) bool {
		if !until.IsZero() && !n.Created.Before(until) {
			return true
		}
		return !f.labels("label", n.Labels) || !f.notLabels(n.Labels)
	})
	if err != nil {
		s.fail(w, err)
		return
	}
	if removed == nil {
		removed = []string{}
	}
	writeJSON(w, http.StatusOK, network.PruneReport{NetworksDeleted: removed})
}

// connectBody mirrors Docker's network.ConnectRequest with string addresses.
type connectBody struct {
	Container string
	// PortBindings (a Tether extension; Docker's connect has none) publishes
	// ports on this network, in Docker's PortBindings shape.
	PortBindings   PortMap
	EndpointConfig *struct {
		IPAMConfig *struct {
			IPv4Address  string
			IPv6Address  string
			LinkLocalIPs []string
		}
		Aliases    []string
		MacAddress string
		DriverOpts map[string]string
	}
}

func (s *Server) connect(w http.ResponseWriter, r *http.Request) {
	var b connectBody
	if !decode(w, r, &b) {
		return
	}
	if b.Container == "" {
		writeError(w, http.StatusBadRequest, errors.New("invalid Container: a sandbox name or ID is required"))
		return
	}
	ports, err := portSpecs("PortBindings", b.PortBindings)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	a := engine.AttachSpec{Ports: ports}
	if ec := b.EndpointConfig; ec != nil {
		a.Aliases = ec.Aliases
		if ec.MacAddress != "" {
			writeError(w, http.StatusBadRequest, errors.New("invalid EndpointConfig.MacAddress: static MAC addresses are not supported yet"))
			return
		}
		if c := ec.IPAMConfig; c != nil {
			if len(c.LinkLocalIPs) > 0 {
				writeError(w, http.StatusBadRequest, errors.New("invalid EndpointConfig.IPAMConfig.LinkLocalIPs: link-local addresses are not supported yet"))
				return
			}
			a.IP, a.IP6 = c.IPv4Address, c.IPv6Address
		}
	}
	if err := s.eng.Connect(r.Context(), r.PathValue("id"), b.Container, a); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) disconnect(w http.ResponseWriter, r *http.Request) {
	var b network.DisconnectRequest
	if !decode(w, r, &b) {
		return
	}
	if b.Container == "" {
		writeError(w, http.StatusBadRequest, errors.New("invalid Container: a sandbox name or ID is required"))
		return
	}
	if err := s.eng.Disconnect(r.Context(), r.PathValue("id"), b.Container, b.Force); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// inspectView renders a network in Docker's NetworkResource shape.
// Containers is filled for inspect and left empty in lists, as Docker does.
func inspectView(v *engine.NetworkView, withContainers bool) network.Inspect {
	out := network.Inspect{
		Network: network.Network{
			Name: v.Name, ID: v.ID, Created: v.Created, Scope: scopeOf(v), Driver: v.Driver,
			EnableIPv4: v.IPv4, EnableIPv6: v.IPv6, Internal: v.Internal, Attachable: v.Attachable,
			IPAM:    network.IPAM{Driver: v.IPAMDriver, Options: v.IPAMOpts, Config: []network.IPAMConfig{}},
			Options: nonNil(v.Options), Labels: nonNil(v.Labels),
		},
		Containers: map[string]network.EndpointResource{},
	}
	if v.Subnet.IsValid() {
		c := network.IPAMConfig{Subnet: v.Subnet, IPRange: v.IPRange, Gateway: v.Gateway}
		if len(v.Aux) > 0 {
			c.AuxAddress = v.Aux
		}
		out.IPAM.Config = append(out.IPAM.Config, c)
	}
	if v.Subnet6.IsValid() {
		c := network.IPAMConfig{Subnet: v.Subnet6, IPRange: v.IPRange6, Gateway: v.Gateway6}
		if len(v.Aux6) > 0 {
			c.AuxAddress = v.Aux6
		}
		out.IPAM.Config = append(out.IPAM.Config, c)
	}
	if !withContainers {
		return out
	}
	for _, ep := range v.Endpoints {
		mac, _ := net.ParseMAC(ep.MAC)
		out.Containers[ep.SandboxID] = network.EndpointResource{
			Name: ep.SandboxName, EndpointID: ep.ID, MacAddress: network.HardwareAddr(mac), IPv4Address: ep.Address,
			IPv6Address: ep.Address6,
		}
	}
	return out
}

func scopeOf(v *engine.NetworkView) string {
	if v.Scope != "" {
		return v.Scope
	}
	return "local"
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func matchNetwork(f filters, v *engine.NetworkView) (bool, error) {
	// Values are checked before matching, so an invalid one is an error
	// whatever the other filters say.
	for t := range f["type"] {
		if t != "custom" && t != "builtin" {
			return false, fmt.Errorf("invalid filter 'type=%s': must be custom or builtin", t)
		}
	}
	for d := range f["dangling"] {
		if _, err := parseBool(d); err != nil {
			return false, fmt.Errorf("invalid filter 'dangling=%s': %w", d, err)
		}
	}
	if !f.any("driver", func(d string) bool { return d == v.Driver }) ||
		!f.any("id", func(p string) bool { return strings.HasPrefix(v.ID, p) }) ||
		!f.any("name", func(p string) bool { return strings.Contains(v.Name, p) }) ||
		!f.any("scope", func(s string) bool { return s == scopeOf(v) }) ||
		!f.labels("label", v.Labels) ||
		!f.any("type", func(t string) bool { return (t == "builtin") == v.Predefined }) {
		return false, nil
	}
	for d := range f["dangling"] {
		want, _ := parseBool(d)
		if want != (len(v.Endpoints) == 0 && !v.Predefined) {
			return false, nil
		}
	}
	return true, nil
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	kernel := kernelVersion()
	writeJSON(w, http.StatusOK, map[string]any{
		"Platform":      map[string]string{"Name": "Tether"},
		"Components":    []map[string]any{{"Name": "Tether", "Version": Version, "Details": map[string]string{"ApiVersion": APIVersion, "MinAPIVersion": MinAPIVersion, "Os": runtime.GOOS, "Arch": runtime.GOARCH}}},
		"Version":       Version,
		"ApiVersion":    APIVersion,
		"MinAPIVersion": MinAPIVersion,
		"GitCommit":     "",
		"GoVersion":     runtime.Version(),
		"Os":            runtime.GOOS,
		"Arch":          runtime.GOARCH,
		"KernelVersion": kernel,
		"BuildTime":     "",
	})
}

// info answers GET /info with the fields `docker info` prints, in Tether's
// terms: containers are sandboxes (running = with a process), and live
// restore is always on.
func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	host, _ := os.Hostname()
	nets := s.eng.Networks()
	sbs := s.eng.Sandboxes()
	running := 0
	for _, sb := range sbs {
		if len(sb.Procs) > 0 {
			running++
		}
	}
	cfg := s.eng.Config()
	labels := cfg.Labels
	if labels == nil {
		labels = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"ID": "", "Name": host, "ServerVersion": Version, "OperatingSystem": "Tether", "OSType": runtime.GOOS,
		"Architecture": runtime.GOARCH, "NCPU": runtime.NumCPU(), "MemTotal": memTotal(),
		"KernelVersion": kernelVersion(), "Containers": len(sbs), "ContainersRunning": running,
		"ContainersStopped": len(sbs) - running, "DockerRootDir": cfg.DataRoot, "Debug": cfg.Debug,
		"LiveRestoreEnabled": true, "Labels": labels, "IndexServerAddress": "",
		"Plugins":  map[string][]string{"Network": s.eng.Drivers(), "Volume": {}, "Log": {}},
		"Networks": len(nets), "Swarm": map[string]any{"LocalNodeState": "inactive"},
		"Warnings": s.eng.Warnings(),
	})
}

func kernelVersion() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// memTotal reads MemTotal from /proc/meminfo, in bytes (0 if unreadable).
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kb int64
			if _, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kb); err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "1", "true":
		return true, nil
	case "0", "false":
		return false, nil
	}
	return false, errors.New("not a boolean")
}
