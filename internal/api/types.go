package api

import "github.com/tether-net/tether/internal/api/types"

// The wire types of Tether's own routes live in package types, which
// clients import without linking the daemon. These aliases are the same
// types under api's name, for callers that import api anyway (e2e, bench).
type (
	SandboxCreateRequest   = types.SandboxCreateRequest
	NetworkAttach          = types.NetworkAttach
	PortMap                = types.PortMap
	PortBinding            = types.PortBinding
	SandboxEndpoint        = types.SandboxEndpoint
	SandboxProcess         = types.SandboxProcess
	Sandbox                = types.Sandbox
	SandboxNetworkSettings = types.SandboxNetworkSettings
	ExecRequest            = types.ExecRequest
	ExecResponse           = types.ExecResponse
	LinkCreateRequest      = types.LinkCreateRequest
	Link                   = types.Link
	LinkEnd                = types.LinkEnd
)

// StreamProtocol is the Upgrade token of an attached exec.
const StreamProtocol = types.StreamProtocol
