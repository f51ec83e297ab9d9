package types

// The daemon's side of the CNI plugin (issue 16, docs/cni.md): the `tether`
// binary, run by a container runtime with CNI_COMMAND set, is a thin client
// of these routes on the daemon's socket. One attachment is one CNI
// (container ID, interface name) pair: an adopted sandbox with one
// endpoint, named CNI_IFNAME inside the runtime's namespace.
//
//	POST   /tether/v1/cni/attachments                 ADD: CNIAttachRequest -> 201 CNIAttachment
//	GET    /tether/v1/cni/attachments                 every attachment made through CNI -> []CNIAttachment
//	GET    /tether/v1/cni/attachments/{cid}/{ifname}  -> CNIAttachment, 404 when there is none
//	POST   /tether/v1/cni/attachments/{cid}/{ifname}/check
//	                                                  CHECK: 204 when the kernel matches the record, else
//	                                                  409 with the reason (404: no attachment)
//	DELETE /tether/v1/cni/attachments/{cid}/{ifname}  DEL: 204, also when there is none
//	POST   /tether/v1/cni/gc                          GC: CNIGCRequest -> CNIGCResponse
//	GET    /tether/v1/cni/status                      STATUS: CNIStatus (200)
//
// Errors are the API's usual {"message": "..."} with a 4xx naming the field.

// CNIAttachRequest is an ADD: attach the runtime's namespace NetNS to
// Network with an interface named IfName.
type CNIAttachRequest struct {
	ContainerID string `json:"ContainerID"`
	IfName      string `json:"IfName"`
	NetNS       string `json:"NetNS"`   // CNI_NETNS: a namespace file or /proc/PID/ns/net
	Network     string `json:"Network"` // Tether network, name or ID
	// Name is the container's name where the runtime gives one
	// (K8S_POD_NAME, or the runtime's container name): the sandbox's DNS
	// name on the network. "" = none besides Aliases.
	Name    string    `json:"Name,omitempty"`
	IP      string    `json:"IP,omitempty"`  // static IPv4 (capability ips), "" = allocate
	IP6     string    `json:"IP6,omitempty"` // static IPv6 (capability ips), "" = allocate on an IPv6 network
	MAC     string    `json:"MAC,omitempty"` // capability mac
	Aliases []string  `json:"Aliases,omitempty"`
	Ports   []CNIPort `json:"Ports,omitempty"` // capability portMappings
	// HoldPorts: the daemon binds the host ports (and proxies loopback),
	// as for `tether run -p`; false leaves them to the runtime (Podman
	// binds them itself) and publishes only the kernel path.
	HoldPorts bool `json:"HoldPorts,omitempty"`
}

// CNIPort is one portMappings entry.
type CNIPort struct {
	HostIP        string `json:"HostIP,omitempty"` // "" = the daemon's default
	HostPort      uint16 `json:"HostPort"`
	ContainerPort uint16 `json:"ContainerPort"`
	Protocol      string `json:"Protocol,omitempty"` // tcp (default) or udp
}

// CNIAttachment is an attachment as ADD made it: what the plugin turns into
// a CNI result.
type CNIAttachment struct {
	ContainerID string `json:"ContainerID"`
	IfName      string `json:"IfName"`
	NetNS       string `json:"NetNS"`
	SandboxID   string `json:"SandboxID"`
	SandboxName string `json:"SandboxName"`
	NetworkID   string `json:"NetworkID"`
	Network     string `json:"Network"`
	// The interface in the runtime's namespace.
	MAC     string `json:"MAC"`
	Address string `json:"Address"`           // IPv4 CIDR; "" on an IPv6-only network
	Gateway string `json:"Gateway,omitempty"` // "" on an internal network
	// Address6 and Gateway6 are the IPv6 side on a dual-stack or IPv6-only
	// network ("" on an IPv4-only one; Gateway6 "" on an internal one).
	Address6 string `json:"Address6,omitempty"` // CIDR
	Gateway6 string `json:"Gateway6,omitempty"`
	// DefaultRoute: this attachment carries the namespace's default routes
	// (0.0.0.0/0 via Gateway, ::/0 via Gateway6, each when there is one).
	DefaultRoute bool `json:"DefaultRoute"`
	MTU          int  `json:"MTU"`
	// The host end of the veth pair.
	HostIfName string `json:"HostIfName"`
	// DNS: nameservers (127.0.0.11, served by Tether inside NetNS when the
	// network has names) and search domains; empty when not served.
	DNS    []string  `json:"DNS,omitempty"`
	Search []string  `json:"Search,omitempty"`
	Ports  []CNIPort `json:"Ports,omitempty"`
}

// CNIGCRequest lists the attachments the runtime still uses
// (cni.dev/valid-attachments, or the older cni.dev/attachments).
type CNIGCRequest struct {
	Valid []CNIAttachmentKey `json:"Valid"`
	// Network restricts the collection to one Tether network ("" = every
	// network): a runtime's GC concerns one network configuration.
	Network string `json:"Network,omitempty"`
}

// CNIAttachmentKey names one attachment.
type CNIAttachmentKey struct {
	ContainerID string `json:"ContainerID"`
	IfName      string `json:"IfName"`
}

// CNIGCResponse lists what GC removed.
type CNIGCResponse struct {
	Removed []CNIAttachmentKey `json:"Removed"`
}

// CNIStatus: Degraded with a Reason when the daemon works but cannot do all
// (its cluster store is down: global networks cannot attach).
type CNIStatus struct {
	Degraded bool   `json:"Degraded"`
	Reason   string `json:"Reason,omitempty"`
}
