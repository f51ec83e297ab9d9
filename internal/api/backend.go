package api

import (
	"context"
	"time"

	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/engine"
)

// Backend is what the handlers ask of the engine, and nothing more:
// *engine.Engine is the daemon's; tests serve the API over a fake. Errors
// carry an engine.Kind, which the API maps to a status code (fail).
type Backend interface {
	// Networks
	CreateNetwork(ctx context.Context, spec engine.NetworkSpec) (*engine.Network, error)
	Network(ref string) (*engine.NetworkView, error)
	Networks() []*engine.NetworkView
	RemoveNetwork(ctx context.Context, ref string) error
	PruneNetworks(ctx context.Context, keep func(*engine.Network) bool) ([]string, error)
	Connect(ctx context.Context, netRef, sbRef string, a engine.AttachSpec) error
	Disconnect(ctx context.Context, netRef, sbRef string, force bool) error
	NetworkName(id string) string

	// Sandboxes and their processes
	CreateSandbox(ctx context.Context, spec engine.SandboxSpec) (*engine.Sandbox, error)
	Sandbox(ref string) (*engine.Sandbox, error)
	Sandboxes() []*engine.Sandbox
	RemoveSandbox(ctx context.Context, ref string, force bool) error
	Exec(ctx context.Context, ref string, x engine.ExecSpec) (*engine.Running, error)
	// CheckSandbox compares the kernel with a sandbox's records (CNI CHECK).
	CheckSandbox(ctx context.Context, ref string) error

	// Point-to-point links
	CreateLink(ctx context.Context, spec engine.LinkSpec) (*engine.Link, error)
	Link(ref string) (*engine.Link, error)
	Links() []*engine.Link
	RemoveLink(ctx context.Context, ref string) error

	// ClusterHealthy: the cluster store answers (nil without one).
	ClusterHealthy(ctx context.Context) error

	// The daemon
	// SubscribeEvents returns the kept events since a time and a channel
	// of the live ones; the func ends the subscription.
	SubscribeEvents(since time.Time) ([]engine.Event, <-chan engine.Event, func())
	Config() *config.Config
	Warnings() []string
	Drivers() []string
}
