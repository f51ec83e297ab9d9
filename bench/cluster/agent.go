package clustersim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/driver"
)

// Agent is one simulated host: the real control plane of a daemon with a
// cluster store (cluster.Cluster, its block allocator and its watcher, as
// internal/engine/global.go runs them) over its own store client, and a
// fake datapath.
type Agent struct {
	Index int
	Node  cluster.Node
	DP    *Datapath
	cl    *cluster.Cluster
	st    *countingStore
	w     *cluster.Watcher
	stop  context.CancelFunc
	done  chan struct{}
}

// AgentConfig is what every agent shares.
type AgentConfig struct {
	// Server is the store's server the agents open their clients of; nil
	// means Etcd.
	Server  Server
	Etcd    *Etcd
	Prefix  string // key prefix in the store
	TTL     time.Duration
	Counts  *Counts
	Tracker *Tracker
	Logger  *slog.Logger
	RunID   string // makes node IDs unique per run
}

// VTEP of agent i: an address of 198.19.0.0/16 (RFC 2544, benchmarking),
// never configured anywhere: nothing is sent to it.
func vtep(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}) }

// StartAgent opens agent i's store client, registers its node (Start) and
// starts its watcher; it returns once the watcher's first listing was
// applied.
func StartAgent(ctx context.Context, i int, cfg AgentConfig) (*Agent, error) {
	srv := cfg.Server
	if srv == nil {
		srv = cfg.Etcd
	}
	raw, err := srv.Open(ctx, cfg.Prefix, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("agent %d: %w", i, err)
	}
	st := &countingStore{Store: raw, n: cfg.Counts, written: cfg.Tracker.written, deleted: cfg.Tracker.deleted,
		netWritten: cfg.Tracker.netWritten}
	node := cluster.Node{ID: fmt.Sprintf("%s-%04d", cfg.RunID, i), Name: fmt.Sprintf("sim%04d", i), Addr: vtep(i), Port: 2376,
		StartedAt: time.Now().UTC()}
	cl, err := cluster.New(cluster.Options{Store: st, Self: node, TTL: cfg.TTL, Logger: cfg.Logger})
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("agent %d: %w", i, err)
	}
	if err := cl.Start(ctx); err != nil {
		cl.Stop()
		raw.Close()
		return nil, fmt.Errorf("agent %d: %w", i, err)
	}
	cl.Allocator(nil) // before the watcher: it feeds the allocator (claims, sticky addresses)
	a := &Agent{Index: i, Node: node, DP: NewDatapath(i, cfg.Tracker), cl: cl, st: st, done: make(chan struct{})}
	a.w = cluster.NewWatcher(cl, a.DP)
	wctx, cancel := context.WithCancel(context.Background())
	a.stop = cancel
	go func() { defer close(a.done); a.w.Run(wctx) }()
	select {
	case <-a.w.Synced():
		return a, nil
	case <-ctx.Done():
		a.Kill()
		return nil, fmt.Errorf("agent %d: first listing: %w", i, ctx.Err())
	}
}

// CreateNetwork records an overlay network cluster-wide, as `network
// create -d overlay --subnet` does.
func (a *Agent) CreateNetwork(ctx context.Context, name string, subnet netip.Prefix) (cluster.NetworkRecord, error) {
	return a.cl.CreateNetwork(ctx, cluster.NetworkRecord{ID: newID(), Name: name, Driver: "overlay", Subnet: subnet,
		Created: time.Now().UTC()}, nil)
}

// publishWait bounds an attach's wait for its record.
const publishWait = 10 * time.Second

// Attach makes an endpoint of sandbox name on network n the way the
// engine's claimGlobal and publishGlobal do: an address from the node's
// blocks (Take) and the record published in the background (Publish).
// Unlike the engine's attach it answers once the record is in the store
// (Published: the simulation times convergence from there), failing while
// the store's connection is down (the engine's checkStoreUp). It returns the record as peers should program it
// (also with an error from the publication, when the record has an ID and
// its publication goes on: AwaitPublished).
func (a *Agent) Attach(ctx context.Context, n cluster.NetworkRecord, name string, tr *Tracker) (cluster.EndpointRecord, error) {
	id := newID()
	tr.attaching(id, time.Now())
	al := a.cl.Allocator(nil)
	p, err := al.Take(ctx, cluster.TakeRequest{NetworkID: n.ID, Subnet: n.Subnet, Gateway: n.Gateway, EndpointID: id, SandboxName: name})
	if err != nil {
		return cluster.EndpointRecord{}, fmt.Errorf("agent %d: attach %q: %w", a.Index, name, err)
	}
	// internal/engine/global.go endpointRecord: the engine's fields; the
	// cluster sets Node, NodeName, VTEP (and Address6) when it publishes
	rec := cluster.EndpointRecord{ID: id, NetworkID: n.ID, SandboxID: newID(), SandboxName: name, Address: p,
		MAC: driver.MACFromIP(p.Addr()).String(), Created: time.Now().UTC()}
	al.Publish(rec)
	rec.Node, rec.NodeName, rec.VTEP = a.Node.ID, a.Node.Name, a.Node.Addr
	if err := a.awaitPublished(ctx, id); err != nil {
		return rec, fmt.Errorf("agent %d: attach %q: publish the endpoint: %w", a.Index, name, err)
	}
	return rec, nil
}

// AwaitPublished waits until the publication of endpoint id ended (after
// an Attach that failed while the store was away: the publication goes on
// in the background) and reports whether its record was written.
func (a *Agent) AwaitPublished(ctx context.Context, id string, tr *Tracker) error {
	if done := a.cl.Allocator(nil).Published(id); done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("agent %d: publication of %s: %w", a.Index, id, ctx.Err())
		}
	}
	if !tr.Written(id) {
		return fmt.Errorf("agent %d: publication of %s ended without the record written", a.Index, id)
	}
	return nil
}

// Detach withdraws an endpoint of this agent as the engine's detach does
// (internal/engine/global.go withdrawNow): the allocator's Withdraw, not a
// rollback. The record given is what Attach returned.
func (a *Agent) Detach(ctx context.Context, rec cluster.EndpointRecord, tr *Tracker) error {
	tr.withdrawing(rec.ID, time.Now())
	if err := a.cl.Allocator(nil).Withdraw(ctx, rec, false); err != nil {
		return fmt.Errorf("agent %d: detach %q: %w", a.Index, rec.SandboxName, err)
	}
	return nil
}

func (a *Agent) awaitPublished(ctx context.Context, id string) error {
	al := a.cl.Allocator(nil)
	done := al.Published(id)
	if done == nil {
		return nil
	}
	t := time.NewTimer(publishWait)
	defer t.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return nil
		case <-tick.C:
			// the engine refuses an attach while the store's connection
			// is down (checkStoreUp)
			if err := a.cl.Connected(); err != nil {
				return err
			}
		case <-t.C:
			return fmt.Errorf("no answer within %v", publishWait)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Kill stops the agent as a killed daemon stops: its watcher and its
// keep-alive end and its store connection closes; nothing is withdrawn and
// its lease is left to expire. Safe to call twice.
func (a *Agent) Kill() {
	if a.stop == nil {
		return
	}
	a.stop()
	<-a.done
	a.cl.Stop()
	_ = a.st.Close()
	a.stop = nil
}

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
