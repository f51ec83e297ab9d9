package dockerapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Network is a network as GET /networks/{id} shows it (the fields Tether
// reads).
type Network struct {
	ID         string `json:"Id"`
	Name       string
	Driver     string
	Scope      string // "local", "global" or "swarm"
	Internal   bool
	IPAM       IPAM
	Options    map[string]string
	Labels     map[string]string
	Containers map[string]EndpointResource // container ID -> endpoint; empty in lists
}

// IPAM is a network's address management: driver and pools.
type IPAM struct {
	Driver  string
	Options map[string]string `json:",omitempty"`
	Config  []IPAMConfig
}

// IPAMConfig is one pool of a network.
type IPAMConfig struct {
	Subnet     string            `json:",omitempty"`
	IPRange    string            `json:",omitempty"`
	Gateway    string            `json:",omitempty"`
	AuxAddress map[string]string `json:"AuxiliaryAddresses,omitempty"`
}

// EndpointResource is a container's endpoint as a network inspect shows it.
type EndpointResource struct {
	Name        string // container name
	EndpointID  string
	MacAddress  string
	IPv4Address string // "a.b.c.d/len"
}

// NetworkCreate is the body of POST /networks/create.
type NetworkCreate struct {
	Name       string
	Driver     string `json:",omitempty"` // dockerd's default: bridge
	Internal   bool
	Attachable bool
	IPAM       *IPAM             `json:",omitempty"`
	Options    map[string]string `json:",omitempty"`
	Labels     map[string]string `json:",omitempty"`
}

// NetworkInspect returns the network whose ID, name or unique ID prefix is
// id: GET /networks/{id}. ErrNotFound when dockerd has none.
func (c *Client) NetworkInspect(ctx context.Context, id string) (Network, error) {
	var n Network
	p, err := objectPath("/networks", "network", id)
	if err != nil {
		return n, err
	}
	err = c.call(ctx, http.MethodGet, p, nil, &n)
	return n, err
}

// NetworkList returns every network of dockerd: GET /networks.
func (c *Client) NetworkList(ctx context.Context) ([]Network, error) {
	var ns []Network
	err := c.call(ctx, http.MethodGet, "/networks", nil, &ns)
	return ns, err
}

// NetworkCreate creates a network and returns its ID: POST /networks/create.
// ErrConflict when the name is taken.
func (c *Client) NetworkCreate(ctx context.Context, req NetworkCreate) (string, error) {
	if strings.TrimSpace(req.Name) == "" {
		return "", errors.New("docker API: network create: empty Name")
	}
	var out struct {
		ID      string `json:"Id"`
		Warning string
	}
	const path = "/networks/create"
	if err := c.call(ctx, http.MethodPost, path, req, &out); err != nil {
		return "", err
	}
	if out.ID == "" {
		return "", fmt.Errorf("docker API: POST %s: answer has no Id", path)
	}
	return out.ID, nil
}

// NetworkRemove deletes a network: DELETE /networks/{id}. ErrNotFound when
// dockerd has no such network; ErrInUse when it refuses because containers
// are still attached (403, or 409 from older daemons), with its message.
func (c *Client) NetworkRemove(ctx context.Context, id string) error {
	p, err := objectPath("/networks", "network", id)
	if err != nil {
		return err
	}
	err = c.call(ctx, http.MethodDelete, p, nil, nil)
	var e *Error
	if errors.As(err, &e) && (e.Status == http.StatusForbidden || e.Status == http.StatusConflict) {
		e.kind = ErrInUse
	}
	return err
}
