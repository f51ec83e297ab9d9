package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tether-net/tether/internal/store"
)

// lazyStore is a store.Store that connects on first use and, while the
// cluster store cannot be reached, tries again on each call (at most once a
// second; in between a call fails at once with the last error, wrapped as
// "cluster store not connected"). It lets a daemon start while its cluster
// store is down: local networks work at once, global ones when the store
// answers. Once connected it passes every call through (the backend
// reconnects by itself from then on). A connection attempt holds the lock,
// so calls made meanwhile wait for its outcome.
type lazyStore struct {
	open func(ctx context.Context) (store.Store, error)
	now  func() time.Time // nil: time.Now (tests set a clock)

	mu      sync.Mutex
	st      store.Store
	lastErr error
	lastTry time.Time
	closed  bool
}

// errLazyClosed: the wrapper was closed; it is store.ErrClosed, as a
// backend's own is.
var errLazyClosed = fmt.Errorf("cluster store: %w", store.ErrClosed)

// lazyRetry is the shortest time between two attempts to connect.
const lazyRetry = time.Second

func (l *lazyStore) clock() time.Time {
	if l.now != nil {
		return l.now()
	}
	return time.Now()
}

// get returns the connected store, connecting first when it is not (at
// most once per lazyRetry: in between, the last error is returned at once).
func (l *lazyStore) get(ctx context.Context) (store.Store, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return nil, errLazyClosed
	case l.st != nil:
		return l.st, nil
	case l.lastErr != nil && l.clock().Sub(l.lastTry) < lazyRetry:
		return nil, l.lastErr
	}
	l.lastTry = l.clock()
	st, err := l.open(ctx)
	if err != nil {
		l.lastErr = fmt.Errorf("cluster store not connected: %w", err)
		return nil, l.lastErr
	}
	l.st, l.lastErr = st, nil
	return st, nil
}

// Connected is store.Connectivity: the connected backend's, or why there
// is none yet (a connection being made counts as not connected).
func (l *lazyStore) Connected() error {
	if !l.mu.TryLock() {
		return fmt.Errorf("cluster store not connected: connecting: %w", store.ErrUnreachable)
	}
	st, lastErr, closed := l.st, l.lastErr, l.closed
	l.mu.Unlock()
	switch {
	case closed:
		return errLazyClosed
	case st != nil:
		return store.Connected(st)
	case lastErr != nil:
		return lastErr
	}
	return nil // never asked to connect: not known to be down
}

var _ store.Connectivity = (*lazyStore)(nil)

func (l *lazyStore) Get(ctx context.Context, key string) (store.KV, error) {
	st, err := l.get(ctx)
	if err != nil {
		return store.KV{}, err
	}
	return st.Get(ctx, key)
}

func (l *lazyStore) List(ctx context.Context, prefix string) ([]store.KV, error) {
	st, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return st.List(ctx, prefix)
}

func (l *lazyStore) Put(ctx context.Context, key string, value []byte, lease store.LeaseID) (int64, error) {
	st, err := l.get(ctx)
	if err != nil {
		return 0, err
	}
	return st.Put(ctx, key, value, lease)
}

func (l *lazyStore) Create(ctx context.Context, key string, value []byte, lease store.LeaseID) (int64, error) {
	st, err := l.get(ctx)
	if err != nil {
		return 0, err
	}
	return st.Create(ctx, key, value, lease)
}

func (l *lazyStore) CompareAndSwap(ctx context.Context, key string, value []byte, prevRev int64, lease store.LeaseID) (int64, error) {
	st, err := l.get(ctx)
	if err != nil {
		return 0, err
	}
	return st.CompareAndSwap(ctx, key, value, prevRev, lease)
}

func (l *lazyStore) Delete(ctx context.Context, key string) error {
	st, err := l.get(ctx)
	if err != nil {
		return err
	}
	return st.Delete(ctx, key)
}

func (l *lazyStore) CompareAndDelete(ctx context.Context, key string, prevRev int64) error {
	st, err := l.get(ctx)
	if err != nil {
		return err
	}
	return st.CompareAndDelete(ctx, key, prevRev)
}

func (l *lazyStore) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	st, err := l.get(ctx)
	if err != nil {
		return 0, err
	}
	return st.Txn(ctx, cmps, ops)
}

func (l *lazyStore) Watch(ctx context.Context, prefix string, afterRev int64) (<-chan store.Event, error) {
	st, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return st.Watch(ctx, prefix, afterRev)
}

func (l *lazyStore) Grant(ctx context.Context, ttl time.Duration) (store.LeaseID, error) {
	st, err := l.get(ctx)
	if err != nil {
		return 0, err
	}
	return st.Grant(ctx, ttl)
}

func (l *lazyStore) KeepAlive(ctx context.Context, id store.LeaseID) error {
	st, err := l.get(ctx)
	if err != nil {
		return err
	}
	return st.KeepAlive(ctx, id)
}

func (l *lazyStore) Revoke(ctx context.Context, id store.LeaseID) error {
	st, err := l.get(ctx)
	if err != nil {
		return err
	}
	return st.Revoke(ctx, id)
}

// Close closes the backend if it was connected; calls after it fail with
// store.ErrClosed and never connect. A second Close does nothing.
func (l *lazyStore) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.st != nil {
		return l.st.Close()
	}
	return nil
}
