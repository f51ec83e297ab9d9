package engine

// The early record: an attach's record written while its driver joins.
//
// Why: the record is the attach's last step before the answer (an attach
// answers only once it is recorded, so a restart finds it), and writing it
// costs about a tenth of a bridge attach. The record is known before the
// kernel work starts, except for the host end's name, which drivers that
// implement driver.HostIfNamer let the engine choose. So for those the
// record is written on another goroutine, beside the join, and
// commitEndpoint writes nothing when the store still holds exactly what it
// would write.
//
// Guarantees kept:
//   - Nothing stale stays: the early write takes e.mu from its snapshot of
//     the sandbox record to the end of its transaction, as every writer of
//     the record does, and commitEndpoint skips its own write only when the
//     record's revision in the store is still the early write's and the ops
//     are the same (else it writes, as before).
//   - A failed attach leaves no record of its endpoint: connectLocked's
//     rollback waits for the early write and writes the record as memory
//     has it (removing the sandbox, on a create, deletes it).
//   - A crash between the early write and the answer leaves a record of an
//     endpoint whose kernel side may be missing or partial: the next start
//     repairs it (restore.go), as it does an endpoint whose links were lost
//     after the answer. The bridge marks the host end in the join's last
//     request (bridge.finishHostEnd), so a cut-off join is never taken for
//     intact.
//     The client saw no answer, as when a crash comes between the record
//     and the answer; the sandbox exists (docs/lifecycle.md).

import (
	"bytes"
	"context"
	"slices"
	"strings"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/store"
)

// early is an attach's record written beside the join.
type early struct {
	done chan struct{}
	ops  []store.Op // what was written
	rev  int64      // the revision it was written at
	err  error
}

// wait blocks until the early write ended; nil waits for nothing.
func (x *early) wait() {
	if x != nil {
		<-x.done
	}
}

// startEarly names the host end (driver.HostIfNamer) and writes the
// attach's record on another goroutine. It does nothing for attaches whose
// record changes during the join in ways the engine cannot foresee: drivers
// that name no host end, published ports (their host ports are chosen at
// publish), handovers and global networks.
func (e *Engine) startEarly(ctx context.Context, sb *sbState, ns *netState, at *attachment, ports bool) {
	namer, ok := at.drv.(driver.HostIfNamer)
	if !ok || ports || at.global || sb.rec.Handover || at.dep.HostIfName != "" {
		return
	}
	at.dep.HostIfName = namer.HostIfName()
	ep := *at.ep // the attach goroutine goes on changing at.ep
	ep.HostIfName = at.dep.HostIfName
	x := &early{done: make(chan struct{})}
	at.early = x
	ctx = context.WithoutCancel(ctx)
	go func() {
		defer close(x.done)
		e.mu.Lock()
		defer e.mu.Unlock()
		x.ops, _ = e.endpointOps(sb, ns, &ep)
		x.rev, x.err = e.rt.Txn(ctx, nil, x.ops)
	}()
}

// endpointOps is the runtime store's ops that record ep: the sandbox record
// with ep among its endpoints (in the order the attaches began) and the
// sticky addresses; and the endpoints list they record. Called with e.mu
// held; sb.rec is not changed.
func (e *Engine) endpointOps(sb *sbState, ns *netState, ep *Endpoint) ([]store.Op, []*Endpoint) {
	at := len(sb.rec.Endpoints)
	if i := slices.IndexFunc(sb.rec.Endpoints, func(x *Endpoint) bool { return x.Created.After(ep.Created) }); i >= 0 {
		at = i
	}
	eps := slices.Insert(slices.Clone(sb.rec.Endpoints), at, ep)
	rec := *sb.rec
	rec.Endpoints = eps
	ops := []store.Op{e.putJSON(keySandboxes+rec.ID, &rec)}
	if ns.subnet != nil && ep.Address.IsValid() {
		ops = append(ops, store.Put(keySticky+ns.rec.ID+"/"+rec.Name, []byte(ep.Address.Addr().String())))
	}
	if ns.subnet6 != nil && ep.Address6.IsValid() {
		ops = append(ops, store.Put(keySticky6+ns.rec.ID+"/"+rec.Name, []byte(ep.Address6.Addr().String())))
	}
	return ops, eps
}

// earlyHolds reports whether the store holds exactly ops because of x:
// x wrote them, and the sandbox record (ops[0]) has not been written since.
// Called with e.mu held, after x.wait().
func (e *Engine) earlyHolds(ctx context.Context, x *early, ops []store.Op) bool {
	if x == nil || x.err != nil || !sameOps(x.ops, ops) {
		return false
	}
	kv, err := e.rt.Get(ctx, ops[0].Key)
	return err == nil && kv.Revision == x.rev
}

func sameOps(a, b []store.Op) bool {
	return slices.EqualFunc(a, b, func(x, y store.Op) bool {
		return x.Type == y.Type && x.Key == y.Key && x.Lease == y.Lease && bytes.Equal(x.Value, y.Value)
	})
}

// undoEarly, for a failed attach, waits for its early write and, when it
// was made, puts back what it changed: the sandbox record as memory has it
// (without the endpoint) and the sticky addresses as they were before.
func (e *Engine) undoEarly(ctx context.Context, sb *sbState, at *attachment) {
	x := at.early
	if x == nil {
		return
	}
	x.wait()
	if x.err != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	ops := []store.Op{e.putJSON(keySandboxes+sb.rec.ID, sb.rec)}
	for _, op := range x.ops[1:] {
		prior := at.sticky
		if strings.HasPrefix(op.Key, keySticky6) {
			prior = at.sticky6
		}
		if prior.IsValid() {
			ops = append(ops, store.Put(op.Key, []byte(prior.String())))
		} else {
			ops = append(ops, store.Delete(op.Key))
		}
	}
	if err := e.commit(ctx, ops...); err != nil {
		e.log.Warn("roll back attach: the early record", "sandbox", sb.rec.Name, "err", err)
	}
}
