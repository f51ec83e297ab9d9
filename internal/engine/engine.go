// Package engine is Tether's controller: it owns the records of networks,
// sandboxes and endpoints, allocates addresses, and drives the drivers. Data
// flows one way: the API calls the engine; the engine calls drivers, IPAM,
// namespaces and the store.
//
// Locking: e.mu guards the in-memory maps and every store write (one store
// transaction per change). Kernel work (veths, bridges, namespaces) runs
// outside e.mu under the affected sandbox's own lock, so attaches of
// different sandboxes proceed in parallel.
package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	"github.com/tether-net/tether/internal/driver/nulldrv"
	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/proc"
	"github.com/tether-net/tether/internal/store"
)

// Options configures an Engine.
type Options struct {
	Config *config.Config
	Store  store.Store
	Logger *slog.Logger
	// Netlink is the handle of the host namespace; nil means the current one.
	Netlink *netlink.Handle
}

// Engine is the controller. Create it with New, then call Start.
type Engine struct {
	cfg   *config.Config
	st    store.Store
	log   *slog.Logger
	nl    *netlink.Handle
	nsDir string // private mount holding namespace files
	sbDir string // per-sandbox files (hosts, resolv.conf, hostname)

	drivers map[string]driver.Driver

	mu        sync.Mutex
	networks  map[string]*netState
	sandboxes map[string]*sbState
	events    *Events
}

type netState struct {
	rec    *Network
	subnet *ipam.Subnet // nil for drivers without addresses
	rev    int64        // store revision of the IPAM record
	// pending counts endpoints being attached right now, so a delete racing
	// an attach sees the network as busy.
	pending int
}

type sbState struct {
	op    sync.Mutex // serialises kernel work on this sandbox
	rec   *Sandbox
	procs map[int]*proc.Process
	gone  bool // removed while someone waited for op
}

// New builds an engine; nothing touches the kernel until Start.
func New(o Options) (*Engine, error) {
	if o.Config == nil || o.Store == nil {
		return nil, fmt.Errorf("engine: config and store are required")
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	nl := o.Netlink
	if nl == nil {
		nl = &netlink.Handle{}
	}
	e := &Engine{
		cfg:       o.Config,
		st:        o.Store,
		log:       log,
		nl:        nl,
		nsDir:     filepath.Join(o.Config.ExecRoot, "ns"),
		sbDir:     filepath.Join(o.Config.ExecRoot, "sandboxes"),
		networks:  map[string]*netState{},
		sandboxes: map[string]*sbState{},
		events:    newEvents(),
	}
	e.drivers = map[string]driver.Driver{
		"bridge": bridge.New(nl),
		"host":   nulldrv.Host(),
		"null":   nulldrv.Null(),
	}
	return e, nil
}

// Events returns the engine's event hub.
func (e *Engine) Events() *Events { return e.events }

// Start prepares the runtime directories, restores state from the store and
// makes sure the predefined networks exist.
func (e *Engine) Start(ctx context.Context) error {
	if err := os.MkdirAll(e.sbDir, 0o700); err != nil {
		return fmt.Errorf("create %q: %w", e.sbDir, err)
	}
	if err := netns.PrepareDir(e.nsDir); err != nil {
		return fmt.Errorf("prepare namespace directory %q: %w", e.nsDir, err)
	}
	if err := e.bindHostNS(); err != nil {
		return err
	}
	if err := e.restore(ctx); err != nil {
		return fmt.Errorf("restore state: %w", err)
	}
	return e.ensurePredefined(ctx)
}

// hostNSPath is the namespace file of the host network: the daemon's own
// network namespace, bound under nsDir so sandboxes on "host" can enter it.
func (e *Engine) hostNSPath() string { return filepath.Join(e.nsDir, "host.net") }

func (e *Engine) bindHostNS() error {
	p := e.hostNSPath()
	_ = netns.Delete(p) // a stale bind from an earlier run
	if err := netns.BindProcNS(os.Getpid(), "net", p); err != nil {
		return fmt.Errorf("bind host namespace to %q: %w", p, err)
	}
	return nil
}

func (e *Engine) putJSON(key string, v any) store.Op {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal %s: %v", key, err)) // records are plain data
	}
	return store.Put(key, b)
}

func (e *Engine) commit(ctx context.Context, ops ...store.Op) error {
	if _, err := e.st.Txn(ctx, nil, ops); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}
