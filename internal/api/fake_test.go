package api

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/engine"
)

// The real engine is a Backend (a compile-time check, in a test so that the
// package itself needs no engine instance).
var _ Backend = (*engine.Engine)(nil)

// fakeBackend is a Backend that records what the handlers ask and answers
// with canned values, or with err from every method that can fail.
type fakeBackend struct {
	mu    sync.Mutex
	calls []string // method names, in call order

	err error // when set, every method that returns an error returns it

	// Canned answers.
	created   *engine.Network
	network   *engine.NetworkView
	networks  []*engine.NetworkView
	pruneable []*engine.Network // offered to PruneNetworks' keep; the others are "removed"
	sandbox   *engine.Sandbox
	sandboxes []*engine.Sandbox
	names     map[string]string // network ID -> name
	cfg       *config.Config
	warnings  []string
	exec      func(x engine.ExecSpec) (*engine.Running, error) // nil: a detached process with PID 4242
	// createSandbox, when set, answers CreateSandbox (after the spec is recorded)
	createSandbox func(spec engine.SandboxSpec) (*engine.Sandbox, error)
	past          []engine.Event    // kept events SubscribeEvents returns (those since the asked time)
	live          chan engine.Event // nil: no live events, the stream ends after the past ones

	// What the handlers passed.
	netSpec            engine.NetworkSpec
	sbSpec             engine.SandboxSpec
	attach             engine.AttachSpec
	netRef, sbRef, ref string
	force              bool
	execSpec           engine.ExecSpec
	since              time.Time
	linkSpec           engine.LinkSpec
	link               *engine.Link // canned answer of CreateLink and Link
}

// mutating are the Backend methods that change state: a refused request
// must call none of them.
var mutating = []string{"CreateNetwork", "RemoveNetwork", "PruneNetworks", "Connect", "Disconnect",
	"CreateSandbox", "RemoveSandbox", "Exec", "CreateLink", "RemoveLink"}

func newFakeServer(f *fakeBackend) *Server { return New(f, slog.New(slog.DiscardHandler)) }

// enter records a call and holds f.mu until the returned function runs, so
// a handler on another goroutine (httptest.Server) and the test reading the
// fake afterwards (under f.mu: locked) do not race.
func (f *fakeBackend) enter(name string) func() {
	f.mu.Lock()
	f.calls = append(f.calls, name)
	return f.mu.Unlock
}

// locked runs fn with f.mu held.
func (f *fakeBackend) locked(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

// mutated lists the mutating methods that were called.
func (f *fakeBackend) mutated() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if slices.Contains(mutating, c) {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeBackend) reached() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls) > 0
}

func (f *fakeBackend) CreateNetwork(_ context.Context, spec engine.NetworkSpec) (*engine.Network, error) {
	defer f.enter("CreateNetwork")()
	f.netSpec = spec
	if f.err != nil {
		return nil, f.err
	}
	if f.created != nil {
		return f.created, nil
	}
	return &engine.Network{ID: "0123456789ab" + "cdef0123456789abcdef0123456789abcdef0123456789abcdef", Name: spec.Name}, nil
}

func (f *fakeBackend) Network(ref string) (*engine.NetworkView, error) {
	defer f.enter("Network")()
	f.ref = ref
	if f.err != nil {
		return nil, f.err
	}
	return f.network, nil
}

func (f *fakeBackend) Networks() []*engine.NetworkView {
	defer f.enter("Networks")()
	return f.networks
}

func (f *fakeBackend) RemoveNetwork(_ context.Context, ref string) error {
	defer f.enter("RemoveNetwork")()
	f.ref = ref
	return f.err
}

func (f *fakeBackend) PruneNetworks(_ context.Context, keep func(*engine.Network) bool) ([]string, error) {
	defer f.enter("PruneNetworks")()
	if f.err != nil {
		return nil, f.err
	}
	var removed []string
	for _, n := range f.pruneable {
		if !keep(n) {
			removed = append(removed, n.Name)
		}
	}
	return removed, nil
}

func (f *fakeBackend) Connect(_ context.Context, netRef, sbRef string, a engine.AttachSpec) error {
	defer f.enter("Connect")()
	f.netRef, f.sbRef, f.attach = netRef, sbRef, a
	return f.err
}

func (f *fakeBackend) Disconnect(_ context.Context, netRef, sbRef string, force bool) error {
	defer f.enter("Disconnect")()
	f.netRef, f.sbRef, f.force = netRef, sbRef, force
	return f.err
}

func (f *fakeBackend) NetworkName(id string) string {
	defer f.enter("NetworkName")()
	return f.names[id]
}

func (f *fakeBackend) CreateSandbox(_ context.Context, spec engine.SandboxSpec) (*engine.Sandbox, error) {
	defer f.enter("CreateSandbox")()
	f.sbSpec = spec
	if f.createSandbox != nil {
		return f.createSandbox(spec)
	}
	if f.err != nil {
		return nil, f.err
	}
	if f.sandbox != nil {
		return f.sandbox, nil
	}
	return &engine.Sandbox{ID: "5a4db0c5" + "0000000000000000000000000000000000000000000000000000000000", Name: spec.Name}, nil
}

func (f *fakeBackend) Sandbox(ref string) (*engine.Sandbox, error) {
	defer f.enter("Sandbox")()
	f.ref = ref
	if f.err != nil {
		return nil, f.err
	}
	return f.sandbox, nil
}

func (f *fakeBackend) Sandboxes() []*engine.Sandbox {
	defer f.enter("Sandboxes")()
	return f.sandboxes
}

func (f *fakeBackend) RemoveSandbox(_ context.Context, ref string, force bool) error {
	defer f.enter("RemoveSandbox")()
	f.ref, f.force = ref, force
	return f.err
}

func (f *fakeBackend) CheckSandbox(_ context.Context, ref string) error {
	defer f.enter("CheckSandbox")()
	f.ref = ref
	return f.err
}

func (f *fakeBackend) CreateLink(_ context.Context, spec engine.LinkSpec) (*engine.Link, error) {
	defer f.enter("CreateLink")()
	f.linkSpec = spec
	return f.link, f.err
}

func (f *fakeBackend) Link(ref string) (*engine.Link, error) {
	defer f.enter("Link")()
	f.ref = ref
	return f.link, f.err
}

func (f *fakeBackend) Links() []*engine.Link {
	defer f.enter("Links")()
	if f.link == nil {
		return nil
	}
	return []*engine.Link{f.link}
}

func (f *fakeBackend) RemoveLink(_ context.Context, ref string) error {
	defer f.enter("RemoveLink")()
	f.ref = ref
	return f.err
}

func (f *fakeBackend) ClusterHealthy(context.Context) error {
	defer f.enter("ClusterHealthy")()
	return f.err
}

func (f *fakeBackend) Exec(_ context.Context, ref string, x engine.ExecSpec) (*engine.Running, error) {
	defer f.enter("Exec")()
	f.ref, f.execSpec = ref, x
	if f.err != nil {
		return nil, f.err
	}
	if f.exec != nil {
		return f.exec(x)
	}
	done := make(chan struct{})
	close(done)
	return &engine.Running{PID: 4242, Done: done}, nil
}

// SubscribeEvents gives the canned past events and the live channel (a
// closed one when none is set, so a stream without until ends).
func (f *fakeBackend) SubscribeEvents(since time.Time) ([]engine.Event, <-chan engine.Event, func()) {
	defer f.enter("SubscribeEvents")()
	f.since = since
	live := f.live
	if live == nil {
		c := make(chan engine.Event)
		close(c)
		live = c
	}
	var past []engine.Event
	for _, e := range f.past {
		if !e.Time.Before(since) {
			past = append(past, e)
		}
	}
	return past, live, func() {}
}

func (f *fakeBackend) Config() *config.Config {
	defer f.enter("Config")()
	if f.cfg == nil {
		return &config.Config{}
	}
	return f.cfg
}

func (f *fakeBackend) Warnings() []string {
	defer f.enter("Warnings")()
	return f.warnings
}

func (f *fakeBackend) Drivers() []string {
	defer f.enter("Drivers")()
	return []string{"bridge", "host", "null"}
}
