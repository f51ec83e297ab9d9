package dockerapi

import (
	"context"
	"net/http"
	"strings"
)

// ContainerNetworks are a container's endpoints, keyed by network name.
type ContainerNetworks map[string]ContainerEndpoint

// ContainerEndpoint is a container's endpoint on one network, as
// GET /containers/{id}/json shows it under NetworkSettings.Networks.
type ContainerEndpoint struct {
	NetworkID  string
	EndpointID string
	IPAddress  string // without prefix length
	MacAddress string
	Aliases    []string // --network-alias
	// DNSNames (API 1.44+) are every name the container answers to on the
	// network: container name, aliases, short ID, hostname.
	DNSNames []string
}

// ContainerNetworks returns a container's name (without Docker's leading
// "/") and its endpoints: GET /containers/{id}/json. ErrNotFound when dockerd
// has no such container.
//
// dockerd holds the container's lock while it starts the container, network
// plugin calls included, and inspect waits for that lock: never call this
// from inside a plugin call for the same container.
func (c *Client) ContainerNetworks(ctx context.Context, id string) (string, ContainerNetworks, error) {
	p, err := objectPath("/containers", "container", id)
	if err != nil {
		return "", nil, err
	}
	var out struct {
		Name            string
		NetworkSettings *struct {
			Networks ContainerNetworks
		}
	}
	if err := c.call(ctx, http.MethodGet, p+"/json", nil, &out); err != nil {
		return "", nil, err
	}
	name := strings.TrimPrefix(out.Name, "/")
	if out.NetworkSettings == nil {
		return name, nil, nil
	}
	return name, out.NetworkSettings.Networks, nil
}
