package cniplugin

// The network configuration on stdin and CNI_ARGS, turned into the daemon's
// request. Every refusal is a CNI error that names the field and its value
// (spec section 5: code 7 invalid network config, 6 undecodable, 4 bad
// environment variable, 2 unsupported field).

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	cnitypes "github.com/containernetworking/cni/pkg/types"

	apitypes "github.com/tether-net/tether/internal/api/types"
)

// DefaultSocket is the daemon's socket unless the configuration's "socket"
// says otherwise.
const DefaultSocket = "unix:///run/tether.sock"

// netConf is one plugin configuration as the runtime passes it: the
// network configuration's plugin entry plus what the runtime inserts
// (cniVersion, name, runtimeConfig, prevResult, the GC lists).
type netConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	// Network is the Tether network, name or ID.
	Network string `json:"network"`
	// Socket is the daemon's socket: unix:///PATH or /PATH.
	Socket string `json:"socket"`
	// HoldPorts: the daemon holds the host ports of portMappings (binds
	// them, and serves loopback through its proxy), as for `tether run -p`.
	// Off by default: runtimes such as Podman bind published ports
	// themselves, as they do with the reference portmap plugin.
	HoldPorts bool `json:"holdPorts,omitempty"`
	// IPAM naming a plugin is refused: Tether allocates on its network.
	IPAM          json.RawMessage `json:"ipam"`
	RuntimeConfig runtimeConfig   `json:"runtimeConfig"`
	Args          struct {
		CNI capabilityArgs `json:"cni"`
	} `json:"args"`
	RawPrevResult map[string]any `json:"prevResult"`
	// The GC lists: the spec's key and the older one libcni also sends.
	ValidAttachments  []gcEntry `json:"cni.dev/valid-attachments"`
	LegacyAttachments []gcEntry `json:"cni.dev/attachments"`

	socketPath string // Socket resolved to a file
}

// runtimeConfig holds the capability arguments Tether declares
// (CONVENTIONS.md: portMappings, ips, mac, aliases).
type runtimeConfig struct {
	PortMappings []portMapping   `json:"portMappings"`
	IPs          []string        `json:"ips"`
	MAC          string          `json:"mac"`
	Aliases      json.RawMessage `json:"aliases"`
}

// capabilityArgs are the conventions' "args": {"cni": {...}} forms of the
// same requests, used where runtimeConfig does not give one.
type capabilityArgs struct {
	IPs     []string        `json:"ips"`
	Aliases json.RawMessage `json:"aliases"`
}

// portMapping is one portMappings entry; ints so that a negative or
// too-large port is refused by name rather than by the JSON decoder.
type portMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP"`
}

// gcEntry is one valid attachment. Network is not in the spec; an entry
// that carries one names the network configuration it belongs to.
type gcEntry struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
	Network     string `json:"network,omitempty"`
}

// cniArgs are the CNI_ARGS Tether reads; unknown keys are an error unless
// IgnoreUnknown=1, as the convention says.
type cniArgs struct {
	cnitypes.CommonArgs
	K8S_POD_NAME cnitypes.UnmarshallableString //nolint:revive // the key's spelling
}

func errorf(code uint, format string, a ...any) *cnitypes.Error {
	return cnitypes.NewError(code, fmt.Sprintf(format, a...), "")
}

// loadConf decodes stdin and resolves the socket. needNetwork: the
// command cannot do without "network" (every one but DEL).
func loadConf(stdin []byte, needNetwork bool) (*netConf, *cnitypes.Error) {
	conf := &netConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, errorf(cnitypes.ErrDecodingFailure, "decode the network configuration: %v", err)
	}
	if needNetwork && strings.TrimSpace(conf.Network) == "" {
		return nil, errorf(cnitypes.ErrInvalidNetworkConfig,
			`network configuration %q: "network" (the Tether network, name or ID) is required`, conf.Name)
	}
	if ipamType(conf.IPAM) != "" {
		return nil, errorf(cnitypes.ErrUnsupportedField,
			`unsupported field "ipam": %s: Tether allocates addresses on network %q itself (remove "ipam")`,
			conf.IPAM, conf.Network)
	}
	path, err := socketPath(conf.Socket)
	if err != nil {
		return nil, errorf(cnitypes.ErrInvalidNetworkConfig, `invalid "socket" %q: %v`, conf.Socket, err)
	}
	if conf.Socket == "" {
		conf.Socket = DefaultSocket
	}
	conf.socketPath = path
	return conf, nil
}

// ipamType is the "type" of an "ipam" section: one that names a plugin is
// refused, an empty one ({}) is not.
func ipamType(raw json.RawMessage) string {
	var ipam struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(raw, &ipam) != nil && !isNull(raw) {
		return string(raw)
	}
	return ipam.Type
}

// socketPath is the socket file of unix:///PATH or /PATH ("" = the
// default).
func socketPath(s string) (string, error) {
	if s == "" {
		s = DefaultSocket
	}
	p := s
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		if scheme != "unix" {
			return "", fmt.Errorf("scheme %q: the plugin reaches the daemon on its unix socket only (unix:///PATH or /PATH)", scheme)
		}
		p = rest
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("want an absolute path, unix:///PATH or /PATH")
	}
	return filepath.Clean(p), nil
}

// attachRequest is the daemon's ADD request for args and conf.
func attachRequest(args *skel.CmdArgs, conf *netConf) (apitypes.CNIAttachRequest, *cnitypes.Error) {
	req := apitypes.CNIAttachRequest{ContainerID: args.ContainerID, IfName: args.IfName,
		NetNS: args.Netns, Network: conf.Network, HoldPorts: conf.HoldPorts}
	var e *cnitypes.Error
	if req.Name, e = podName(args.Args); e != nil {
		return req, e
	}
	if req.IP, req.IP6, e = staticIPs(conf); e != nil {
		return req, e
	}
	if req.MAC, e = macAddress(conf.RuntimeConfig.MAC); e != nil {
		return req, e
	}
	if req.Aliases, e = aliases(conf); e != nil {
		return req, e
	}
	req.Ports, e = ports(conf.RuntimeConfig.PortMappings)
	return req, e
}

// podName is K8S_POD_NAME from CNI_ARGS ("" when absent). Podman passes
// the container's name there too.
func podName(s string) (string, *cnitypes.Error) {
	var a cniArgs
	if err := cnitypes.LoadArgs(s, &a); err != nil {
		return "", errorf(cnitypes.ErrInvalidEnvironmentVariables, "CNI_ARGS %q: %v", s, err)
	}
	return string(a.K8S_POD_NAME), nil
}

// staticIPs are the addresses requested through the ips capability (or
// args.cni.ips): a list of addresses of either family, each with or
// without a prefix length, at most one per family (a dual-stack
// attachment has one of each). The daemon gets the bare addresses, IPv4
// in IP and IPv6 in IP6; the network's subnets decide the prefixes.
func staticIPs(conf *netConf) (ip, ip6 string, e *cnitypes.Error) {
	ips, field := conf.RuntimeConfig.IPs, "runtimeConfig.ips"
	if len(ips) == 0 {
		ips, field = conf.Args.CNI.IPs, "args.cni.ips"
	}
	var v4, v6 netip.Addr
	for _, s := range ips {
		a, err := parseIP(s)
		if err != nil {
			return "", "", errorf(cnitypes.ErrInvalidNetworkConfig, "invalid %s entry %q: %v", field, s, err)
		}
		family, have := "IPv4", &v4
		if a.Is6() {
			family, have = "IPv6", &v6
		}
		if have.IsValid() {
			return "", "", errorf(cnitypes.ErrInvalidNetworkConfig,
				"invalid %s: %q and %q: at most one %s address per attachment", field, *have, s, family)
		}
		*have = a
	}
	if v4.IsValid() {
		ip = v4.String()
	}
	if v6.IsValid() {
		ip6 = v6.String()
	}
	return ip, ip6, nil
}

// parseIP reads ADDR or ADDR/PREFIX of either family; an IPv4-mapped
// IPv6 address is its IPv4 address. A zone is refused: an address on a
// network has none.
func parseIP(s string) (netip.Addr, error) {
	var a netip.Addr
	var err error
	if strings.Contains(s, "/") {
		var p netip.Prefix
		p, err = netip.ParsePrefix(s)
		a = p.Addr()
	} else {
		a, err = netip.ParseAddr(s)
	}
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("not an address or ADDRESS/PREFIX")
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("an address with a zone is no address on a network")
	}
	return a.Unmap(), nil
}

// macAddress checks the mac capability: a 6-byte unicast Ethernet address.
func macAddress(s string) (string, *cnitypes.Error) {
	if s == "" {
		return "", nil
	}
	hw, err := net.ParseMAC(s)
	switch {
	case err != nil || len(hw) != 6:
		return "", errorf(cnitypes.ErrInvalidNetworkConfig,
			"invalid runtimeConfig.mac %q: want a MAC address like 02:42:0a:01:02:03", s)
	case hw[0]&1 == 1:
		return "", errorf(cnitypes.ErrInvalidNetworkConfig,
			"invalid runtimeConfig.mac %q: a multicast address cannot be an interface's", s)
	}
	return hw.String(), nil
}

// aliases reads the aliases capability (or args.cni.aliases): a list, or
// Podman's map from network configuration name to list, of which the
// entry for this configuration counts.
func aliases(conf *netConf) ([]string, *cnitypes.Error) {
	raw, field := conf.RuntimeConfig.Aliases, "runtimeConfig.aliases"
	if isNull(raw) {
		raw, field = conf.Args.CNI.Aliases, "args.cni.aliases"
	}
	if isNull(raw) {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		var byNet map[string][]string
		if json.Unmarshal(raw, &byNet) != nil {
			return nil, errorf(cnitypes.ErrInvalidNetworkConfig,
				`invalid %s %s: want a list of names or {"<network name>": [names]}`, field, raw)
		}
		list = byNet[conf.Name]
	}
	for _, a := range list {
		if strings.TrimSpace(a) == "" {
			return nil, errorf(cnitypes.ErrInvalidNetworkConfig, "invalid %s %s: an empty name", field, raw)
		}
	}
	return list, nil
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// ports checks the portMappings capability and converts it.
func ports(pms []portMapping) ([]apitypes.CNIPort, *cnitypes.Error) {
	var out []apitypes.CNIPort
	for i, pm := range pms {
		p, err := port(pm)
		if err != nil {
			return nil, errorf(cnitypes.ErrInvalidNetworkConfig, "invalid runtimeConfig.portMappings[%d] %+v: %v", i, pm, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func port(pm portMapping) (apitypes.CNIPort, error) {
	p := apitypes.CNIPort{HostIP: pm.HostIP, Protocol: strings.ToLower(pm.Protocol)}
	switch {
	case pm.HostPort < 1 || pm.HostPort > 65535:
		return p, fmt.Errorf("hostPort %d: want 1-65535", pm.HostPort)
	case pm.ContainerPort < 1 || pm.ContainerPort > 65535:
		return p, fmt.Errorf("containerPort %d: want 1-65535", pm.ContainerPort)
	case p.Protocol != "" && p.Protocol != "tcp" && p.Protocol != "udp":
		return p, fmt.Errorf("protocol %q: tcp or udp", pm.Protocol)
	}
	if pm.HostIP != "" {
		a, err := netip.ParseAddr(pm.HostIP)
		if err != nil || !a.Unmap().Is4() {
			return p, fmt.Errorf("hostIP %q: not an IPv4 address", pm.HostIP)
		}
		p.HostIP = a.Unmap().String()
	}
	if p.Protocol == "" {
		p.Protocol = "tcp"
	}
	p.HostPort, p.ContainerPort = uint16(pm.HostPort), uint16(pm.ContainerPort)
	return p, nil
}

// validAttachments is the GC's valid set: both keys' entries, once each,
// without those that name another network configuration.
func validAttachments(conf *netConf) []apitypes.CNIAttachmentKey {
	out := []apitypes.CNIAttachmentKey{}
	seen := map[apitypes.CNIAttachmentKey]bool{}
	for _, list := range [][]gcEntry{conf.ValidAttachments, conf.LegacyAttachments} {
		for _, e := range list {
			k := apitypes.CNIAttachmentKey{ContainerID: e.ContainerID, IfName: e.IfName}
			if seen[k] || (e.Network != "" && e.Network != conf.Name) {
				continue
			}
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}
