package types

import (
	"net/netip"
	"time"
)

// LinkCreateRequest is the body of POST /tether/v1/links: a point-to-point
// link between sandboxes A and B (names or IDs).
type LinkCreateRequest struct {
	Name    string `json:"Name,omitempty"`   // "" = "A-B"
	A       string `json:"A"`                // sandbox name or ID
	B       string `json:"B"`                // sandbox name or ID
	IP      string `json:"IP,omitempty"`     // A's IPv4 address; with PeerIP, or neither (from link-pool)
	PeerIP  string `json:"PeerIP,omitempty"` // B's IPv4 address
	MTU     int    `json:"MTU,omitempty"`    // 0 = 1500
	DNSName bool   `json:"DNSName,omitempty"`
}

// LinkEnd is one end of a link.
type LinkEnd struct {
	SandboxID   string       `json:"SandboxID"`
	SandboxName string       `json:"SandboxName"`
	IfName      string       `json:"IfName"`
	Address     netip.Prefix `json:"Address"`
}

// Link is the answer of GET /tether/v1/links/{id} (and the list's items).
type Link struct {
	ID      string    `json:"Id"`
	Name    string    `json:"Name"`
	Created time.Time `json:"Created"`
	A       LinkEnd   `json:"A"`
	B       LinkEnd   `json:"B"`
	MTU     int       `json:"MTU"`
	DNSName bool      `json:"DNSName"`
}
