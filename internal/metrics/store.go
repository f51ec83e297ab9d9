package metrics

// The cluster store's round trips are timed by a wrapper the daemon puts
// around the store it hands to the cluster package, so neither the store
// backends nor the cluster code carry a clock. The wrapper also tells
// whether the store answers (the last round trip's fate) and how far this
// node's watches lag: each write it passes on is remembered with the time
// the store acknowledged it, until a watch covering its key delivers an
// event of that revision or later.

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-net/tether/internal/store"
)

// maxPending bounds the writes remembered for the watch lag; beyond it the
// oldest are forgotten (the lag then reads low, never unbounded memory).
const maxPending = 4096

// Store wraps a store.Store and measures it. It is a prometheus.Collector
// of the store's reachability and watch lag (Register it once).
type Store struct {
	st  store.Store
	now func() time.Time

	mu       sync.Mutex
	down     bool
	prefixes map[*watchOf]struct{} // prefixes of the watches open now
	pending  []pendingWrite        // in revision order
}

// watchOf is one open watch: its prefix and the highest revision it has
// delivered (an event may come before the write's answer does).
type watchOf struct {
	prefix string
	seen   int64
}

type pendingWrite struct {
	rev  int64
	at   time.Time
	keys []string
}

// InstrumentStore returns st measured.
func InstrumentStore(st store.Store) *Store {
	return &Store{st: st, now: time.Now, prefixes: map[*watchOf]struct{}{}}
}

// unreachable: err says the store could not be asked, not that it said no.
func unreachable(err error) bool {
	switch {
	case err == nil, errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrExists),
		errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrLeaseNotFound),
		errors.Is(err, store.ErrCompacted), errors.Is(err, store.ErrClosed), errors.Is(err, context.Canceled):
		return false
	}
	return true
}

// done records one round trip of op that began at t0.
func (s *Store) done(op string, t0 time.Time, err error) {
	if !On() {
		return
	}
	StoreSeconds.WithLabelValues(op).Observe(s.now().Sub(t0).Seconds())
	down := unreachable(err)
	if down {
		StoreErrors.WithLabelValues(op).Inc()
	}
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

func (s *Store) start() time.Time {
	if !On() {
		return time.Time{}
	}
	return s.now()
}

// wrote remembers a write acknowledged at revision rev, when a watch covers
// one of its keys.
func (s *Store) wrote(rev int64, err error, keys ...string) {
	if err != nil || rev <= 0 || !On() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var watched []string
	for _, k := range keys {
		covered, delivered := s.watchedLocked(k, rev)
		if delivered { // the watch was faster than the answer
			WatchDelaySeconds.WithLabelValues().Observe(0)
			return
		}
		if covered {
			watched = append(watched, k)
		}
	}
	if len(watched) == 0 {
		return
	}
	if len(s.pending) == maxPending {
		s.pending = s.pending[1:]
	}
	s.pending = append(s.pending, pendingWrite{rev: rev, at: s.now(), keys: watched})
}

// watchedLocked reports whether an open watch covers key, and whether one
// that does has delivered revision rev already.
func (s *Store) watchedLocked(key string, rev int64) (covered, delivered bool) {
	for w := range s.prefixes {
		if strings.HasPrefix(key, w.prefix) {
			covered = true
			delivered = delivered || w.seen >= rev
		}
	}
	return covered, delivered
}

// delivered notes that watch w delivered revision rev and settles the
// pending writes under its prefix with a revision up to rev: their delay is
// observed and they are forgotten.
func (s *Store) delivered(w *watchOf, rev int64) {
	if !On() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w.seen = max(w.seen, rev)
	prefix := w.prefix
	now := s.now()
	kept := s.pending[:0]
	for _, p := range s.pending {
		if p.rev <= rev && anyPrefix(p.keys, prefix) {
			WatchDelaySeconds.WithLabelValues().Observe(now.Sub(p.at).Seconds())
			continue
		}
		kept = append(kept, p)
	}
	s.pending = kept
}

func anyPrefix(keys []string, prefix string) bool {
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// Describe and Collect make s a prometheus.Collector.
func (s *Store) Describe(ch chan<- *prometheus.Desc) { ch <- StoreUpDesc; ch <- WatchLagDesc }

func (s *Store) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	up, lag := 1.0, 0.0
	if s.down {
		up = 0
	}
	if len(s.pending) > 0 {
		oldest := s.pending[0].at
		for _, p := range s.pending {
			if p.at.Before(oldest) {
				oldest = p.at
			}
		}
		lag = s.now().Sub(oldest).Seconds()
	}
	s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(StoreUpDesc, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(WatchLagDesc, prometheus.GaugeValue, lag)
}

// Connected is the wrapped store's store.Connectivity.
func (s *Store) Connected() error { return store.Connected(s.st) }

func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	t0 := s.start()
	kv, err := s.st.Get(ctx, key)
	s.done("get", t0, err)
	return kv, err
}

func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, error) {
	t0 := s.start()
	kvs, err := s.st.List(ctx, prefix)
	s.done("list", t0, err)
	return kvs, err
}

func (s *Store) Put(ctx context.Context, key string, value []byte, lease store.LeaseID) (int64, error) {
	t0 := s.start()
	rev, err := s.st.Put(ctx, key, value, lease)
	s.done("put", t0, err)
	s.wrote(rev, err, key)
	return rev, err
}

func (s *Store) Create(ctx context.Context, key string, value []byte, lease store.LeaseID) (int64, error) {
	t0 := s.start()
	rev, err := s.st.Create(ctx, key, value, lease)
	s.done("create", t0, err)
	s.wrote(rev, err, key)
	return rev, err
}

func (s *Store) CompareAndSwap(ctx context.Context, key string, value []byte, prevRev int64, lease store.LeaseID) (int64, error) {
	t0 := s.start()
	rev, err := s.st.CompareAndSwap(ctx, key, value, prevRev, lease)
	s.done("cas", t0, err)
	s.wrote(rev, err, key)
	return rev, err
}

// Delete and CompareAndDelete return no revision: their watch events are
// not waited for.
func (s *Store) Delete(ctx context.Context, key string) error {
	t0 := s.start()
	err := s.st.Delete(ctx, key)
	s.done("delete", t0, err)
	return err
}

func (s *Store) CompareAndDelete(ctx context.Context, key string, prevRev int64) error {
	t0 := s.start()
	err := s.st.CompareAndDelete(ctx, key, prevRev)
	s.done("cad", t0, err)
	return err
}

func (s *Store) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	t0 := s.start()
	rev, err := s.st.Txn(ctx, cmps, ops)
	s.done("txn", t0, err)
	if err == nil && On() {
		keys := make([]string, len(ops))
		for i, o := range ops {
			keys[i] = o.Key
		}
		s.wrote(rev, err, keys...)
	}
	return rev, err
}

// Watch times the call that opens the watch and relays its events, each
// settling the writes it shows delivered.
func (s *Store) Watch(ctx context.Context, prefix string, afterRev int64) (<-chan store.Event, error) {
	t0 := s.start()
	in, err := s.st.Watch(ctx, prefix, afterRev)
	s.done("watch", t0, err)
	if err != nil || !On() {
		return in, err
	}
	w := &watchOf{prefix: prefix}
	s.mu.Lock()
	s.prefixes[w] = struct{}{}
	s.mu.Unlock()
	out := make(chan store.Event, cap(in))
	go func() {
		defer close(out)
		defer func() {
			s.mu.Lock()
			delete(s.prefixes, w)
			s.mu.Unlock()
		}()
		for ev := range in {
			s.delivered(w, ev.KV.Revision)
			select {
			case out <- ev:
			case <-ctx.Done():
				for range in { // let the backend close it
				}
				return
			}
		}
	}()
	return out, nil
}

func (s *Store) Grant(ctx context.Context, ttl time.Duration) (store.LeaseID, error) {
	t0 := s.start()
	id, err := s.st.Grant(ctx, ttl)
	s.done("grant", t0, err)
	return id, err
}

func (s *Store) KeepAlive(ctx context.Context, id store.LeaseID) error {
	t0 := s.start()
	err := s.st.KeepAlive(ctx, id)
	s.done("keepalive", t0, err)
	return err
}

func (s *Store) Revoke(ctx context.Context, id store.LeaseID) error {
	t0 := s.start()
	err := s.st.Revoke(ctx, id)
	s.done("revoke", t0, err)
	return err
}

// Close closes the wrapped store.
func (s *Store) Close() error { return s.st.Close() }
