package engine

import (
	"net/netip"
	"strings"
	"time"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/store"
)

// Store keys. Everything local lives under one prefix so a future global
// store can sit beside it without clashes.
const (
	keyNetworks  = "tether/v1/local/networks/"
	keyIPAM      = "tether/v1/local/ipam/"
	keySandboxes = "tether/v1/local/sandboxes/"
	keySticky    = "tether/v1/local/sticky/"
	// IPv6: a network's second allocator and sandboxes' sticky IPv6
	// addresses, beside the IPv4 ones (records from before IPv6 have none).
	keyIPAM6   = "tether/v1/local/ipam6/"
	keySticky6 = "tether/v1/local/sticky6/"
)

// runtimeKeys are the records of kernel objects that die with the machine
// (sandboxes with their endpoints, point-to-point links) and the sticky
// addresses of sandbox names. They live in the runtime store
// (Options.Runtime): a restart of the daemon finds them, a reboot does not,
// and the namespaces they describe are gone by then too. Address bitmaps
// stay in the durable store as the network made them; the addresses
// endpoints hold are marked from these records at start (gcStore).
var runtimeKeys = []string{keySandboxes, keySticky, keySticky6, keyLinks}

func isRuntimeKey(k string) bool {
	for _, p := range runtimeKeys {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// storeOf is the store that holds keys under prefix.
func (e *Engine) storeOf(prefix string) store.Store {
	if isRuntimeKey(prefix) {
		return e.rt
	}
	return e.st
}

// Network is the record of one network.
type Network struct {
	ID         string                `json:"id"`
	Name       string                `json:"name"`
	Driver     string                `json:"driver"`
	Created    time.Time             `json:"created"`
	Internal   bool                  `json:"internal,omitempty"`
	Attachable bool                  `json:"attachable,omitempty"`
	IPAMDriver string                `json:"ipamDriver,omitempty"`
	IPAMOpts   map[string]string     `json:"ipamOptions,omitempty"`
	Subnet     netip.Prefix          `json:"subnet,omitzero"`
	IPRange    netip.Prefix          `json:"ipRange,omitzero"`
	Gateway    netip.Addr            `json:"gateway,omitzero"`
	Aux        map[string]netip.Addr `json:"aux,omitempty"`
	// IPv6 (Docker's EnableIPv6 and its second IPAM config entry). NoIPv4
	// marks an IPv6-only network (Docker 28's EnableIPv4=false): Subnet is
	// zero. Subnet6 is zero on an IPv4-only network.
	IPv6     bool                  `json:"ipv6,omitempty"`
	NoIPv4   bool                  `json:"noIPv4,omitempty"`
	Subnet6  netip.Prefix          `json:"subnet6,omitzero"`
	IPRange6 netip.Prefix          `json:"ipRange6,omitzero"`
	Gateway6 netip.Addr            `json:"gateway6,omitzero"`
	Aux6     map[string]netip.Addr `json:"aux6,omitempty"`
	Options  map[string]string     `json:"options,omitempty"`
	Labels   map[string]string     `json:"labels,omitempty"`

	// Derived from options at creation, kept for the driver.
	BridgeName string `json:"bridgeName,omitempty"`
	MTU        int    `json:"mtu,omitempty"`
	ICC        bool   `json:"icc"`
	Masquerade bool   `json:"masquerade"`
	External   bool   `json:"external,omitempty"` // bridge existed before Tether
	Predefined bool   `json:"predefined,omitempty"`
	Default    bool   `json:"default,omitempty"` // the default network "bridge"
	// SandboxGateway overrides the sandboxes' default route (daemon option
	// default-gateway); zero means Gateway.
	SandboxGateway netip.Addr `json:"sandboxGateway,omitzero"`
	// SandboxGateway6 is default-gateway-v6's IPv6 default route.
	SandboxGateway6 netip.Addr `json:"sandboxGateway6,omitzero"`

	// Global (overlay) networks: Scope "global", their VXLAN ID, and this
	// host's VTEP (its advertise address) when the record was installed.
	Scope string     `json:"scope,omitempty"`
	VNI   int        `json:"vni,omitempty"`
	VTEP  netip.Addr `json:"vtep,omitzero"`
}

// Endpoint is one attachment of a sandbox to a network.
type Endpoint struct {
	ID         string        `json:"id"`
	NetworkID  string        `json:"networkId"`
	IfName     string        `json:"ifName,omitempty"`
	HostIfName string        `json:"hostIfName,omitempty"`
	Address    netip.Prefix  `json:"address,omitzero"`
	Gateway    netip.Addr    `json:"gateway,omitzero"`
	Address6   netip.Prefix  `json:"address6,omitzero"`
	Gateway6   netip.Addr    `json:"gateway6,omitzero"`
	MAC        string        `json:"mac,omitempty"`
	StaticIP   bool          `json:"staticIp,omitempty"`
	StaticIP6  bool          `json:"staticIp6,omitempty"`
	Aliases    []string      `json:"aliases,omitempty"`
	Ports      []PortBinding `json:"ports,omitempty"`
	Created    time.Time     `json:"created"`
}

// ProcRecord is a process Tether started in a sandbox; StartTime (clock ticks
// since boot, from /proc/PID/stat) tells it apart from a later process that
// reused the PID.
type ProcRecord struct {
	PID       int      `json:"pid"`
	StartTime uint64   `json:"startTime"`
	Args      []string `json:"args"`
	Main      bool     `json:"main,omitempty"`
}

// Sandbox is the record of one sandbox: its namespaces and its endpoints in
// attach order (eth0 first).
type Sandbox struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Hostname string    `json:"hostname"`
	Created  time.Time `json:"created"`
	NetNS    string    `json:"netns"`
	// NSDev and NSInode identify the network namespace (netns.ID): the one
	// we were given (adopted) or made. Records from before NSDev was kept
	// have only NSInode, and only for adopted namespaces.
	NSDev   uint64 `json:"nsDev,omitempty"`
	NSInode uint64 `json:"nsInode,omitempty"`
	// Files: the sandbox's hosts, resolv.conf and hostname files exist and
	// its processes see them (since its first process). Its mount and UTS
	// namespaces are not recorded: they live in its processes.
	Files bool `json:"files,omitempty"`
	// MntNS and UTSNS are read from records of earlier versions only (which
	// bound those namespaces to files); restore drops them.
	MntNS      string `json:"mntns,omitempty"`
	UTSNS      string `json:"utsns,omitempty"`
	Adopted    bool   `json:"adopted,omitempty"`
	AdoptedPID int    `json:"adoptedPid,omitempty"`
	HostNet    bool   `json:"hostNetwork,omitempty"`
	// Handover: another runtime owns the sandbox's namespace and Tether never
	// opens it (Docker's remote driver protocol). Each endpoint is a veth
	// pair made in the host namespace whose sandbox end (IfName, a
	// temporary name) the runtime moves, names, addresses and routes; NetNS
	// is empty. Such a sandbox lives while its endpoints' host ends do.
	Handover bool `json:"handover,omitempty"`
	// ServeDNS: an adopted sandbox whose runtime asked for Tether's
	// resolver (CNI): 127.0.0.11 is served in its namespace.
	ServeDNS bool `json:"serveDns,omitempty"`
	// Labels are the front's keys for the sandbox (CNI: container ID and
	// interface name).
	Labels     map[string]string `json:"labels,omitempty"`
	AutoRemove bool              `json:"autoRemove,omitempty"`
	Endpoints  []*Endpoint       `json:"endpoints,omitempty"`
	Procs      []ProcRecord      `json:"procs,omitempty"`

	// Warnings say why the sandbox is degraded (empty: it is not). Not
	// stored: each start and each operation finds them anew.
	Warnings []string `json:"-"`
}

// netnsID is the recorded identity of the sandbox's network namespace.
func (s *Sandbox) netnsID() netns.ID { return netns.ID{Dev: s.NSDev, Ino: s.NSInode} }

// isNetNS reports whether id is the sandbox's recorded network namespace
// (records with only an inode compare the inode).
func (s *Sandbox) isNetNS(id netns.ID) bool {
	if s.NSDev == 0 {
		return s.NSInode != 0 && id.Ino == s.NSInode
	}
	return id == s.netnsID()
}

func (s *Sandbox) endpointOn(netID string) *Endpoint {
	for _, ep := range s.Endpoints {
		if ep.NetworkID == netID {
			return ep
		}
	}
	return nil
}
