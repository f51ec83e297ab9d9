package cluster

// Publication of this node's endpoints, off the attach's critical path. An
// attach takes its address from a held block in memory (blocks.go) and
// hands the endpoint record to Publish, which writes it in the background
// in one transaction with the address key and the sticky address, compared
// against the network record and the block key (or, for an address of
// another node's block, the confirmed address key), retrying while the
// store is away. Remote peers are programmed from the record, so never
// before it is written. Withdraw stops a publication still in flight (an
// attempt already sent is waited for, never abandoned) before it deletes
// the record, so a withdrawn endpoint is never published again.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-net/tether/internal/store"
)

// publisher runs the background publications, one goroutine each.
type publisher struct {
	a    *Allocator
	mu   sync.Mutex
	jobs map[string]*pubJob // by endpoint ID
	wg   sync.WaitGroup
}

type pubJob struct {
	ep   EndpointRecord
	stop atomic.Bool
	done chan struct{}
}

// Publish writes ep (an endpoint of this node whose address Take gave) to
// the store in the background; Published reports when it is there.
func (a *Allocator) Publish(ep EndpointRecord) {
	j := &pubJob{ep: ep, done: make(chan struct{})}
	a.mu.Lock()
	a.setSticky(ep.NetworkID, ep.SandboxName, ep.Address.Addr())
	a.mu.Unlock()
	p := &a.pub
	p.mu.Lock()
	if p.jobs == nil {
		p.jobs = map[string]*pubJob{}
	}
	var prev <-chan struct{}
	if old := p.jobs[ep.ID]; old != nil { // a republication: the newer wins
		old.stop.Store(true)
		prev = old.done // and is written after the attempt in flight
	}
	p.jobs[ep.ID] = j
	p.mu.Unlock()
	p.wg.Go(func() {
		if prev != nil {
			<-prev
		}
		p.run(j)
	})
}

// Published returns a channel closed once ep's publication ended (written,
// withdrawn, or the network gone); nil when none is in flight.
func (a *Allocator) Published(epID string) <-chan struct{} {
	a.pub.mu.Lock()
	defer a.pub.mu.Unlock()
	if j := a.pub.jobs[epID]; j != nil {
		return j.done
	}
	return nil
}

// Flush waits until every publication in flight ended, or ctx ends.
func (a *Allocator) Flush(ctx context.Context) error {
	done := make(chan struct{})
	go func() { a.pub.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *publisher) run(j *pubJob) {
	defer func() {
		p.mu.Lock()
		if p.jobs[j.ep.ID] == j {
			delete(p.jobs, j.ep.ID)
		}
		p.mu.Unlock()
		close(j.done)
	}()
	wait := 50 * time.Millisecond
	for warned := false; !j.stop.Load(); {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := p.a.publishOnce(ctx, j.ep)
		cancel()
		switch {
		case err == nil:
			return
		case errors.Is(err, ErrNotFound), errors.Is(err, ErrAddrInUse):
			p.a.c.log.Error("cluster: endpoint not published", "sandbox", j.ep.SandboxName, "network", j.ep.NetworkID, "err", err)
			return
		case !warned:
			p.a.c.log.Warn("cluster: publish endpoint failed; retrying", "sandbox", j.ep.SandboxName, "network", j.ep.NetworkID, "err", err)
			warned = true
		}
		time.Sleep(wait)
		wait = min(2*wait, 2*time.Second)
	}
}

// stopJob ends ep's publication: no new attempt starts, and one in flight
// is waited for.
func (p *publisher) stopJob(epID string) {
	p.mu.Lock()
	j := p.jobs[epID]
	p.mu.Unlock()
	if j != nil {
		j.stop.Store(true)
		<-j.done
	}
}

// pendingIn reports a publication in flight for an address of blk.
func (p *publisher) pendingIn(netID string, blk netip.Prefix) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, j := range p.jobs {
		if j.ep.NetworkID == netID && blk.Contains(j.ep.Address.Addr()) {
			return true
		}
	}
	return false
}

// publishOnce writes the record, the address key and the sticky address in
// one transaction guarded by the network record and what makes the
// address this node's.
//
// In a held block the block key is the only compare and nothing is read
// first (one round trip): while a live node holds a block of a network,
// RemoveNetwork refuses, and the record's IPv6 address is the caller's
// (Derive6, as NetworkRecord.Address6 gives it). An address of another
// node's block also compares the network record, read first.
func (a *Allocator) publishOnce(ctx context.Context, ep EndpointRecord) error {
	x := ep.Address.Addr()
	if err := a.reloadStale(ctx, ep.NetworkID); err != nil {
		return err
	}
	var cmps []store.Cmp
	if blk, rev, ok := a.blockRev(ep.NetworkID, x); ok {
		cmps = []store.Cmp{store.AtRevision(blockKey(ep.NetworkID, blk), rev)}
	} else {
		n, netRev, err := a.c.getNetwork(ctx, ep.NetworkID)
		if err != nil {
			return err
		}
		guard, err := a.guard(ctx, ep)
		if err != nil {
			return err
		}
		if ep.Address6, err = n.Address6(x); err != nil {
			return fmt.Errorf("publish endpoint of %q on network %q: %w", ep.SandboxName, n.Name, err)
		}
		cmps = []store.Cmp{store.AtRevision(keyNetworks+n.ID, netRev), guard}
	}
	ep.Node, ep.NodeName, ep.VTEP = a.c.self.ID, a.c.self.Name, a.c.self.Addr
	rec, _ := json.Marshal(ep)
	claim, _ := json.Marshal(Claim{Node: a.c.self.ID, Endpoint: ep.ID, Sandbox: ep.SandboxName})
	_, err := a.c.st.Txn(ctx, cmps,
		[]store.Op{store.Put(endpointKey(ep.NetworkID, ep.ID), rec), store.Put(addrKey(ep.NetworkID, x), claim),
			store.Put(keySticky+ep.NetworkID+"/"+ep.SandboxName, []byte(x.String()))})
	if err != nil {
		return fmt.Errorf("cluster store: publish endpoint of %q on network %s: %w", ep.SandboxName, ep.NetworkID, err)
	}
	return nil
}

// guard is the compare that makes an address of another node's block
// ep's: the address key of the claim the block's owner confirmed.
func (a *Allocator) guard(ctx context.Context, ep EndpointRecord) (store.Cmp, error) {
	x := ep.Address.Addr()
	key := addrKey(ep.NetworkID, x)
	kv, err := a.c.st.Get(ctx, key)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.Cmp{}, fmt.Errorf("cluster store: claim of %s: %w", x, err)
	}
	var cl Claim
	if err != nil || json.Unmarshal(kv.Value, &cl) != nil || cl.Node != a.c.self.ID || cl.Endpoint != ep.ID || cl.Pending {
		return store.Cmp{}, fmt.Errorf("address %s on network %s is neither in this node's blocks nor confirmed to it: %w", x, ep.NetworkID, ErrAddrInUse)
	}
	return store.AtRevision(key, kv.Revision), nil
}

// Withdraw takes an endpoint of this node out of the store: its
// publication is stopped first, then its record and address key are
// deleted, with its block when that is left empty (and, on rollback, the
// sticky key when it still names this address). The address is free here
// at once. A failed withdrawal is safe to repeat.
func (a *Allocator) Withdraw(ctx context.Context, ep EndpointRecord, rollback bool) error {
	a.pub.stopJob(ep.ID)
	x := ep.Address.Addr()
	ops := []store.Op{store.Delete(endpointKey(ep.NetworkID, ep.ID)), store.Delete(addrKey(ep.NetworkID, x))}
	var cmps []store.Cmp
	if rollback {
		stickyKey := keySticky + ep.NetworkID + "/" + ep.SandboxName
		if kv, err := a.c.st.Get(ctx, stickyKey); err == nil && string(kv.Value) == x.String() {
			cmps = append(cmps, store.AtRevision(stickyKey, kv.Revision))
			ops = append(ops, store.Delete(stickyKey))
		}
	}
	blk, rev, empty := a.release(ep.NetworkID, x)
	if empty {
		cmps = append(cmps, store.AtRevision(blockKey(ep.NetworkID, blk), rev))
		ops = append(ops, store.Delete(blockKey(ep.NetworkID, blk)))
	}
	_, err := a.c.st.Txn(ctx, cmps, ops)
	if errors.Is(err, store.ErrConflict) { // the sticky key moved, or the block is not ours
		_, err = a.c.st.Txn(ctx, nil, ops[:2])
	}
	if err != nil {
		if empty { // keep the block: the withdrawal is retried
			a.mu.Lock()
			if nb := a.nets[ep.NetworkID]; nb != nil {
				nb.blocks[blk] = rev
			}
			a.mu.Unlock()
		}
		return fmt.Errorf("cluster store: withdraw endpoint of %q: %w", ep.SandboxName, err)
	}
	if empty {
		a.c.log.Debug("cluster: address block given back", "network", ep.NetworkID, "block", blk)
	}
	return nil
}

// NetworkInfo is what ReleaseIdle needs to know of a network.
type NetworkInfo struct {
	ID      string
	Subnet  netip.Prefix
	Gateway netip.Addr
}

// ReleaseIdle gives back this node's blocks in which it holds no address
// (after a start: endpoints removed while the daemon was down). nets are
// the global networks installed here; blocks of other networks are left
// to RemoveNetwork.
func (a *Allocator) ReleaseIdle(ctx context.Context, nets []NetworkInfo) (int, error) {
	released := 0
	for _, n := range nets {
		nb, err := a.load(ctx, TakeRequest{NetworkID: n.ID, Subnet: n.Subnet.Masked(), Gateway: n.Gateway})
		if err != nil {
			return released, err
		}
		a.mu.Lock()
		var idle []netip.Prefix
		var revs []int64
		for blk, rev := range nb.blocks {
			busy := a.pub.pendingIn(n.ID, blk)
			for x := range nb.used {
				busy = busy || blk.Contains(x)
			}
			if !busy {
				idle, revs = append(idle, blk), append(revs, rev)
				delete(nb.blocks, blk)
			}
		}
		a.mu.Unlock()
		for i, blk := range idle {
			err := a.c.st.CompareAndDelete(ctx, blockKey(n.ID, blk), revs[i])
			if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
				return released, fmt.Errorf("cluster store: give back block %s: %w", blk, err)
			}
			released++
		}
	}
	return released, nil
}
