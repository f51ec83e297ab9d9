package bolt

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/tether-net/tether/internal/store"
)

// lease returns the lease if it exists and its deadline has not passed.
func (w *writer) lease(id store.LeaseID) (lease, bool) {
	l, ok := decodeLease(w.leases.Get(leaseKey(id)))
	if !ok || !w.now.Before(l.deadline) {
		return lease{}, false
	}
	return l, true
}

func (w *writer) putLease(id store.LeaseID, l lease) error {
	w.dirty = true
	return w.leases.Put(leaseKey(id), encodeLease(l))
}

// revoke deletes the lease and its keys (with delete events).
func (w *writer) revoke(id store.LeaseID) error {
	prefix := leaseKey(id)
	var keys []string
	c := w.leaseKeys.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, string(k[len(prefix):]))
	}
	for _, key := range keys {
		if err := w.del(key); err != nil {
			return err
		}
	}
	w.dirty = true
	return w.leases.Delete(prefix)
}

// Grant creates a lease that expires ttl from now unless kept alive.
// Granting does not move the revision.
func (s *Store) Grant(ctx context.Context, ttl time.Duration) (store.LeaseID, error) {
	if ttl <= 0 {
		return 0, fmt.Errorf("grant lease: ttl %v is not positive", ttl)
	}
	var id store.LeaseID
	_, err := s.update(ctx, func(w *writer) error {
		id = store.LeaseID(decodeInt(w.meta.Get(metaLease)) + 1)
		if err := w.meta.Put(metaLease, encodeInt(int64(id))); err != nil {
			return err
		}
		return w.putLease(id, lease{ttl: ttl, deadline: w.now.Add(ttl)})
	})
	if err != nil {
		return 0, fmt.Errorf("grant lease: %w", err)
	}
	return id, nil
}

// KeepAlive pushes the lease's deadline to now + its TTL, or returns
// store.ErrLeaseNotFound if it expired or was revoked.
func (s *Store) KeepAlive(ctx context.Context, id store.LeaseID) error {
	_, err := s.update(ctx, func(w *writer) error {
		l, ok := w.lease(id)
		if !ok {
			return fmt.Errorf("keep lease %d alive: %w", id, store.ErrLeaseNotFound)
		}
		l.deadline = w.now.Add(l.ttl)
		return w.putLease(id, l)
	})
	return err
}

// Revoke ends the lease and deletes its keys in one revision, or returns
// store.ErrLeaseNotFound if it is unknown.
func (s *Store) Revoke(ctx context.Context, id store.LeaseID) error {
	_, err := s.update(ctx, func(w *writer) error {
		if w.leases.Get(leaseKey(id)) == nil {
			return fmt.Errorf("revoke lease %d: %w", id, store.ErrLeaseNotFound)
		}
		return w.revoke(id)
	})
	return err
}

// expireLoop expires leases every interval until ctx is done.
func (s *Store) expireLoop(ctx context.Context, interval time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.expire(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("expire leases", "store", s.path, "err", err)
			}
		}
	}
}

// expire revokes every lease past its deadline, in one write transaction
// and one revision. A read transaction finds them first, so an idle store
// never commits.
func (s *Store) expire(ctx context.Context) error {
	expired, err := s.expiredLeases(ctx, time.Now())
	if err != nil || len(expired) == 0 {
		return err
	}
	_, err = s.update(ctx, func(w *writer) error {
		for _, id := range expired {
			if _, alive := w.lease(id); alive || w.leases.Get(leaseKey(id)) == nil {
				continue // kept alive or revoked meanwhile
			}
			if err := w.revoke(id); err != nil {
				return fmt.Errorf("lease %d: %w", id, err)
			}
		}
		return nil
	})
	return err
}

func (s *Store) expiredLeases(ctx context.Context, now time.Time) ([]store.LeaseID, error) {
	var ids []store.LeaseID
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketLeases).ForEach(func(k, v []byte) error {
			if l, ok := decodeLease(v); !ok || !now.Before(l.deadline) {
				ids = append(ids, store.LeaseID(decodeInt(k)))
			}
			return nil
		})
	})
	return ids, err
}
