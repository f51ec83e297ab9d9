package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/tether-net/tether/internal/store"
)

// errNoop rolls back a write transaction that changed nothing, so it costs
// no fsync.
var errNoop = errors.New("no change")

var errEmptyKey = store.ErrEmptyKey

// writer is one write transaction. Every key it changes gets revision rev;
// the revision counter moves only if the transaction emitted events.
type writer struct {
	tx                          *bbolt.Tx
	meta, kv, leases, leaseKeys *bbolt.Bucket
	rev                         int64
	now                         time.Time
	events                      []store.Event
	dirty                       bool
}

// update runs fn in one bbolt write transaction and, after the commit,
// publishes its events to watchers. It returns the revision after the write.
func (s *Store) update(ctx context.Context, fn func(w *writer) error) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var w *writer
	err := s.db.Update(func(tx *bbolt.Tx) error {
		w = newWriter(tx)
		if err := fn(w); err != nil {
			return err
		}
		if !w.dirty {
			return errNoop
		}
		if len(w.events) == 0 {
			return nil
		}
		return w.meta.Put(metaRev, encodeInt(w.rev))
	})
	switch {
	case errors.Is(err, errNoop):
		return w.rev - 1, nil
	case err != nil:
		return 0, closedErr(err)
	case len(w.events) == 0:
		return w.rev - 1, nil
	}
	s.hub.publish(w.events)
	return w.rev, nil
}

func newWriter(tx *bbolt.Tx) *writer {
	w := &writer{
		tx:        tx,
		meta:      tx.Bucket(bucketMeta),
		kv:        tx.Bucket(bucketKV),
		leases:    tx.Bucket(bucketLeases),
		leaseKeys: tx.Bucket(bucketLeaseKeys),
		now:       time.Now(),
	}
	w.rev = decodeInt(w.meta.Get(metaRev)) + 1
	return w
}

// get returns the key's current record.
func (w *writer) get(key string) (store.KV, bool, error) {
	raw := w.kv.Get([]byte(key))
	if raw == nil {
		return store.KV{}, false, nil
	}
	kv, err := decodeKV([]byte(key), raw)
	return kv, err == nil, err
}

// revision returns the key's mod revision, 0 if it is absent.
func (w *writer) revision(key string) int64 {
	raw := w.kv.Get([]byte(key))
	if raw == nil {
		return 0
	}
	return decodeInt(raw)
}

// put writes the key at w.rev, moving it to lease (which must be alive).
func (w *writer) put(key string, value []byte, lease store.LeaseID) error {
	if key == "" {
		return errEmptyKey
	}
	if lease != store.NoLease {
		if _, ok := w.lease(lease); !ok {
			return fmt.Errorf("put %q: lease %d: %w", key, lease, store.ErrLeaseNotFound)
		}
	}
	if old, ok, _ := w.get(key); ok && old.Lease != store.NoLease && old.Lease != lease {
		if err := w.leaseKeys.Delete(indexKey(old.Lease, key)); err != nil {
			return err
		}
	}
	if lease != store.NoLease {
		if err := w.leaseKeys.Put(indexKey(lease, key), []byte{}); err != nil {
			return err
		}
	}
	if err := w.kv.Put([]byte(key), encodeKV(w.rev, lease, value)); err != nil {
		return fmt.Errorf("put %q: %w", key, err)
	}
	kv := store.KV{Key: key, Value: bytes.Clone(value), Revision: w.rev, Lease: lease}
	w.emit(store.Event{Type: store.EventPut, KV: kv})
	return nil
}

// del removes the key if present; a missing key changes nothing.
func (w *writer) del(key string) error {
	old, ok, err := w.get(key)
	if !ok {
		return err
	}
	if old.Lease != store.NoLease {
		if err := w.leaseKeys.Delete(indexKey(old.Lease, key)); err != nil {
			return err
		}
	}
	if err := w.kv.Delete([]byte(key)); err != nil {
		return err
	}
	w.emit(store.Event{Type: store.EventDelete, KV: store.KV{Key: key, Revision: w.rev, Lease: old.Lease}})
	return nil
}

func (w *writer) emit(ev store.Event) {
	w.events = append(w.events, ev)
	w.dirty = true
}

// Get returns the key or store.ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	var kv store.KV
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		raw := tx.Bucket(bucketKV).Get([]byte(key))
		if raw == nil {
			return fmt.Errorf("get %q: %w", key, store.ErrNotFound)
		}
		var err error
		kv, err = decodeKV([]byte(key), raw)
		return err
	})
	return kv, err
}

// List returns every key starting with prefix, sorted by key. Use a trailing
// slash ("a/b/") so that "a/bc" is not included.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, error) {
	var out []store.KV
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		p := []byte(prefix)
		c := tx.Bucket(bucketKV).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			kv, err := decodeKV(k, v)
			if err != nil {
				return err
			}
			out = append(out, kv)
		}
		return nil
	})
	return out, err
}

// Put writes the key unconditionally and returns the new revision.
func (s *Store) Put(ctx context.Context, key string, value []byte, lease store.LeaseID) (int64, error) {
	return s.update(ctx, func(w *writer) error { return w.put(key, value, lease) })
}

// Create writes the key only if it is absent, else store.ErrExists.
func (s *Store) Create(ctx context.Context, key string, value []byte, lease store.LeaseID) (int64, error) {
	return s.update(ctx, func(w *writer) error {
		if w.revision(key) != 0 {
			return fmt.Errorf("create %q: %w", key, store.ErrExists)
		}
		return w.put(key, value, lease)
	})
}

// CompareAndSwap writes the key only if its revision is still prevRev:
// store.ErrNotFound if it is gone, store.ErrConflict if it changed.
func (s *Store) CompareAndSwap(ctx context.Context, key string, value []byte, prevRev int64, lease store.LeaseID) (int64, error) {
	return s.update(ctx, func(w *writer) error {
		if err := checkRevision(w, key, prevRev); err != nil {
			return fmt.Errorf("compare-and-swap %q: %w", key, err)
		}
		return w.put(key, value, lease)
	})
}

// Delete removes the key; a missing key is not an error (and costs no commit).
func (s *Store) Delete(ctx context.Context, key string) error {
	_, err := s.update(ctx, func(w *writer) error { return w.del(key) })
	return err
}

// CompareAndDelete removes the key only if its revision is still prevRev:
// store.ErrNotFound if it is gone, store.ErrConflict if it changed.
func (s *Store) CompareAndDelete(ctx context.Context, key string, prevRev int64) error {
	_, err := s.update(ctx, func(w *writer) error {
		if err := checkRevision(w, key, prevRev); err != nil {
			return fmt.Errorf("compare-and-delete %q: %w", key, err)
		}
		return w.del(key)
	})
	return err
}

func checkRevision(w *writer, key string, prevRev int64) error {
	switch rev := w.revision(key); rev {
	case 0:
		return store.ErrNotFound
	case prevRev:
		return nil
	default:
		return fmt.Errorf("revision %d, expected %d: %w", rev, prevRev, store.ErrConflict)
	}
}

// Txn applies ops in one bbolt transaction if every cmp holds (revision 0:
// the key is absent); otherwise it applies nothing and returns
// store.ErrConflict. All keys written get the same revision, which it
// returns. A key may appear in at most one op.
func (s *Store) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	if err := checkOps(ops); err != nil {
		return 0, err
	}
	return s.update(ctx, func(w *writer) error {
		for _, c := range cmps {
			if rev := w.revision(c.Key); rev != c.Revision {
				return fmt.Errorf("txn: %q at revision %d, expected %d: %w", c.Key, rev, c.Revision, store.ErrConflict)
			}
		}
		for _, op := range ops {
			if err := w.apply(op); err != nil {
				return fmt.Errorf("txn: %w", err)
			}
		}
		return nil
	})
}

func (w *writer) apply(op store.Op) error {
	if op.Type == store.OpPut {
		return w.put(op.Key, op.Value, op.Lease)
	}
	return w.del(op.Key)
}

// checkOps rejects what etcd rejects: unknown op types, empty and duplicate keys.
func checkOps(ops []store.Op) error {
	seen := make(map[string]struct{}, len(ops))
	for _, op := range ops {
		if op.Type != store.OpPut && op.Type != store.OpDelete {
			return fmt.Errorf("txn: op on %q: unknown type %d", op.Key, op.Type)
		}
		if op.Key == "" {
			return fmt.Errorf("txn: %w", errEmptyKey)
		}
		if _, dup := seen[op.Key]; dup {
			return fmt.Errorf("txn: duplicate key %q", op.Key)
		}
		seen[op.Key] = struct{}{}
	}
	return nil
}
