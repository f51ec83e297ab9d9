package clustersim

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tether-net/tether/internal/store"
)

// Counts are what the agents asked of the store and what it told them,
// summed over every agent sharing them. Writes count calls (a Txn is one
// write whatever its ops), KeyWrites the keys those calls wrote.
type Counts struct {
	Txns, Puts, Creates, CASes, Deletes, Grants, KeepAlives, Revokes atomic.Int64
	KeyWrites                                                        atomic.Int64
	Gets, Lists, ListedKeys                                          atomic.Int64
	Watches, WatchEvents                                             atomic.Int64
}

// CountsSnapshot is Counts at one moment, for reports.
type CountsSnapshot struct {
	Writes      int64 `json:"writes"` // Txn + Put + Create + CAS + Delete + CompareAndDelete
	Txns        int64 `json:"txns"`
	KeyWrites   int64 `json:"key_writes"`
	LeaseCalls  int64 `json:"lease_calls"` // Grant + KeepAlive + Revoke
	KeepAlives  int64 `json:"keepalives"`
	Gets        int64 `json:"gets"`
	Lists       int64 `json:"lists"`
	ListedKeys  int64 `json:"listed_keys"`
	Watches     int64 `json:"watches"`
	WatchEvents int64 `json:"watch_events"`
}

// Snapshot reads the counters.
func (c *Counts) Snapshot() CountsSnapshot {
	return CountsSnapshot{
		Writes: c.Txns.Load() + c.Puts.Load() + c.Creates.Load() + c.CASes.Load() + c.Deletes.Load(),
		Txns:   c.Txns.Load(), KeyWrites: c.KeyWrites.Load(),
		LeaseCalls: c.Grants.Load() + c.KeepAlives.Load() + c.Revokes.Load(), KeepAlives: c.KeepAlives.Load(),
		Gets: c.Gets.Load(), Lists: c.Lists.Load(), ListedKeys: c.ListedKeys.Load(),
		Watches: c.Watches.Load(), WatchEvents: c.WatchEvents.Load(),
	}
}

// Sub is s - o, counter by counter.
func (s CountsSnapshot) Sub(o CountsSnapshot) CountsSnapshot {
	return CountsSnapshot{s.Writes - o.Writes, s.Txns - o.Txns, s.KeyWrites - o.KeyWrites, s.LeaseCalls - o.LeaseCalls,
		s.KeepAlives - o.KeepAlives, s.Gets - o.Gets, s.Lists - o.Lists, s.ListedKeys - o.ListedKeys,
		s.Watches - o.Watches, s.WatchEvents - o.WatchEvents}
}

// Where endpoint and network records live (internal/cluster's layout,
// docs/overlay.md).
const (
	endpointKeys = "tether/v1/global/endpoints/"
	networkKeys  = "tether/v1/global/networks/"
)

// countingStore is a store.Store that counts the calls to the one it wraps
// and tells written (deleted) when a transaction that put (deleted) an
// endpoint record returned, and netWritten when one that put a network
// record did: the record's ID and the moment.
type countingStore struct {
	store.Store
	n                            *Counts
	written, deleted, netWritten func(id string, at time.Time)
}

var _ store.Store = (*countingStore)(nil)

func (s *countingStore) Get(ctx context.Context, key string) (store.KV, error) {
	s.n.Gets.Add(1)
	return s.Store.Get(ctx, key)
}

func (s *countingStore) List(ctx context.Context, prefix string) ([]store.KV, error) {
	kvs, err := s.Store.List(ctx, prefix)
	s.n.Lists.Add(1)
	s.n.ListedKeys.Add(int64(len(kvs)))
	return kvs, err
}

func (s *countingStore) Put(ctx context.Context, key string, value []byte, lease store.LeaseID) (int64, error) {
	s.n.Puts.Add(1)
	s.n.KeyWrites.Add(1)
	return s.Store.Put(ctx, key, value, lease)
}

func (s *countingStore) Create(ctx context.Context, key string, value []byte, lease store.LeaseID) (int64, error) {
	s.n.Creates.Add(1)
	s.n.KeyWrites.Add(1)
	return s.Store.Create(ctx, key, value, lease)
}

func (s *countingStore) CompareAndSwap(ctx context.Context, key string, value []byte, prevRev int64, lease store.LeaseID) (int64, error) {
	s.n.CASes.Add(1)
	s.n.KeyWrites.Add(1)
	return s.Store.CompareAndSwap(ctx, key, value, prevRev, lease)
}

func (s *countingStore) Delete(ctx context.Context, key string) error {
	s.n.Deletes.Add(1)
	s.n.KeyWrites.Add(1)
	return s.Store.Delete(ctx, key)
}

func (s *countingStore) CompareAndDelete(ctx context.Context, key string, prevRev int64) error {
	s.n.Deletes.Add(1)
	s.n.KeyWrites.Add(1)
	return s.Store.CompareAndDelete(ctx, key, prevRev)
}

func (s *countingStore) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	s.n.Txns.Add(1)
	s.n.KeyWrites.Add(int64(len(ops)))
	rev, err := s.Store.Txn(ctx, cmps, ops)
	if err == nil {
		s.noteEndpoints(ops, time.Now())
	}
	return rev, err
}

func (s *countingStore) noteEndpoints(ops []store.Op, now time.Time) {
	for _, op := range ops {
		if id, ok := strings.CutPrefix(op.Key, networkKeys); ok && op.Type == store.OpPut && s.netWritten != nil {
			s.netWritten(id, now)
		}
		id, ok := strings.CutPrefix(op.Key, endpointKeys)
		if !ok {
			continue
		}
		id = id[strings.LastIndexByte(id, '/')+1:]
		switch {
		case op.Type == store.OpPut && s.written != nil:
			s.written(id, now)
		case op.Type == store.OpDelete && s.deleted != nil:
			s.deleted(id, now)
		}
	}
}

func (s *countingStore) Grant(ctx context.Context, ttl time.Duration) (store.LeaseID, error) {
	s.n.Grants.Add(1)
	return s.Store.Grant(ctx, ttl)
}

func (s *countingStore) KeepAlive(ctx context.Context, id store.LeaseID) error {
	s.n.KeepAlives.Add(1)
	return s.Store.KeepAlive(ctx, id)
}

func (s *countingStore) Revoke(ctx context.Context, id store.LeaseID) error {
	s.n.Revokes.Add(1)
	return s.Store.Revoke(ctx, id)
}

// Watch counts the events delivered, relaying them through a channel of
// the same depth as the store's own.
func (s *countingStore) Watch(ctx context.Context, prefix string, afterRev int64) (<-chan store.Event, error) {
	in, err := s.Store.Watch(ctx, prefix, afterRev)
	if err != nil {
		return nil, err
	}
	s.n.Watches.Add(1)
	out := make(chan store.Event, cap(in))
	go func() {
		defer close(out)
		for ev := range in {
			s.n.WatchEvents.Add(1)
			select {
			case out <- ev:
			case <-ctx.Done():
				for range in { // the store closes in once ctx is done
				}
				return
			}
		}
	}()
	return out, nil
}
