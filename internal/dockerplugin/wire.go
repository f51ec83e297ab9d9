package dockerplugin

// The wire shapes of Docker's legacy plugin protocol, as dockerd 29 sends
// and reads them (moby: daemon/libnetwork/drivers/remote/api and
// ipams/remote/api; docs/design-docker-plugin.md). Field names are
// Docker's. Network driver replies carry errors in "Err", IPAM replies in
// "Error": mixing them up makes a failure look like success to dockerd.

// MediaType is the content type of every answer.
const MediaType = "application/vnd.docker.plugins.v1.2+json"

// Subsystems Tether implements.
const (
	NetworkDriver = "NetworkDriver"
	IpamDriver    = "IpamDriver"
)

type activateResponse struct {
	Implements []string
}

// driverResponse is embedded in every network driver reply.
type driverResponse struct {
	Err string `json:",omitempty"`
}

// ipamResponse is embedded in every IPAM reply.
type ipamResponse struct {
	Error string `json:",omitempty"`
}

type capabilitiesResponse struct {
	driverResponse
	Scope             string
	ConnectivityScope string
}

type ipamCapabilitiesResponse struct {
	ipamResponse
	RequiresMACAddress    bool
	RequiresRequestReplay bool
}

type addressSpacesResponse struct {
	ipamResponse
	LocalDefaultAddressSpace  string
	GlobalDefaultAddressSpace string
}

type requestPoolRequest struct {
	AddressSpace string
	Pool         string
	SubPool      string
	Options      map[string]string
	V6           bool
}

type requestPoolResponse struct {
	ipamResponse
	PoolID string
	Pool   string            `json:",omitempty"` // CIDR
	Data   map[string]string `json:",omitempty"`
}

type releasePoolRequest struct {
	PoolID string
}

type requestAddressRequest struct {
	PoolID  string
	Address string // plain IP or ""
	Options map[string]string
}

type requestAddressResponse struct {
	ipamResponse
	Address string            `json:",omitempty"` // CIDR
	Data    map[string]string `json:",omitempty"`
}

type releaseAddressRequest struct {
	PoolID  string
	Address string
}

// ipamData is one entry of CreateNetwork's IPv4Data (Pool and Gateway in
// CIDR form).
type ipamData struct {
	AddressSpace string
	Pool         string
	Gateway      string
	AuxAddresses map[string]string
}

type createNetworkRequest struct {
	NetworkID string
	Options   map[string]any
	IPv4Data  []ipamData
	IPv6Data  []ipamData
}

type networkRequest struct {
	NetworkID string
}

type endpointInterface struct {
	Address     string `json:",omitempty"`
	AddressIPv6 string `json:",omitempty"`
	MacAddress  string `json:",omitempty"`
}

type createEndpointRequest struct {
	NetworkID  string
	EndpointID string
	Interface  *endpointInterface
	Options    map[string]any
}

type createEndpointResponse struct {
	driverResponse
	Interface *endpointInterface `json:",omitempty"`
}

type endpointRequest struct {
	NetworkID  string
	EndpointID string
}

type endpointInfoResponse struct {
	driverResponse
	Value map[string]any
}

type joinRequest struct {
	NetworkID  string
	EndpointID string
	SandboxKey string
	Options    map[string]any
}

type interfaceName struct {
	SrcName   string
	DstPrefix string
}

type staticRoute struct {
	Destination string
	RouteType   int
	NextHop     string
}

type joinResponse struct {
	driverResponse
	InterfaceName         *interfaceName `json:",omitempty"`
	Gateway               string         `json:",omitempty"`
	GatewayIPv6           string         `json:",omitempty"`
	StaticRoutes          []staticRoute  `json:",omitempty"`
	DisableGatewayService bool           `json:",omitempty"`
}

type connectivityRequest struct {
	NetworkID  string
	EndpointID string
	Options    map[string]any
}

// portBinding is one entry of the com.docker.network.portmap option
// (libnetwork's types.PortBinding: Proto is the IP protocol number).
type portBinding struct {
	Proto       int
	IP          string
	Port        int
	HostIP      string
	HostPort    int
	HostPortEnd int
}

// Option keys Docker sends.
const (
	optGeneric      = "com.docker.network.generic"
	optInternal     = "com.docker.network.internal"
	optPortMap      = "com.docker.network.portmap"
	optEndpointName = "com.docker.network.endpoint.name"
	optAddressType  = "RequestAddressType"
	addressGateway  = "com.docker.network.gateway"
)

// Tether's own options (docker network create -o ..., --ipam-opt ...).
const (
	// OptScope: "local" (a bridge) or "global" (an overlay in the
	// cluster store).
	OptScope = "tether.scope"
	// OptNetwork binds the Docker network to an existing Tether network
	// (name or ID) instead of creating one; the Docker side of a global
	// network on the other hosts carries it.
	OptNetwork = "tether.network"
)
