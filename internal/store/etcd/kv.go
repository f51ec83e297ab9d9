package etcd

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tether-net/tether/internal/store"
)

var errEmptyKey = store.ErrEmptyKey

// listRetries bounds how often List restarts when the revision it pages at
// is compacted under it.
const listRetries = 3

// Get returns the key or store.ErrNotFound. Linearizable: it sees every
// write acknowledged before it started, on any member.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	op := fmt.Sprintf("get %q", key)
	if key == "" {
		return store.KV{}, fmt.Errorf("%s: %w", op, errEmptyKey)
	}
	var resp *clientv3.GetResponse
	err := s.call(ctx, op, func(ctx context.Context) (err error) {
		resp, err = s.client.Get(ctx, s.key(key))
		return err
	})
	if err != nil {
		return store.KV{}, err
	}
	if len(resp.Kvs) == 0 {
		return store.KV{}, fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	return s.toKV(resp.Kvs[0]), nil
}

// List returns every key starting with prefix, sorted by key, as of one
// revision: pages of 1000 keys are all read at the revision of the first.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, error) {
	var out []store.KV
	err := s.call(ctx, fmt.Sprintf("list %q", prefix), func(ctx context.Context) (err error) {
		for range listRetries {
			out, err = s.listOnce(ctx, prefix)
			if !errors.Is(err, rpctypes.ErrCompacted) {
				return err
			}
		}
		return err
	})
	return out, err
}

func (s *Store) listOnce(ctx context.Context, prefix string) ([]store.KV, error) {
	from, end := s.rangeOf(prefix)
	var out []store.KV
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.client.Get(ctx, from, opts...)
		if err != nil {
			return nil, err
		}
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			out = append(out, s.toKV(kv))
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Put writes the key unconditionally and returns the new revision.
func (s *Store) Put(ctx context.Context, key string, value []byte, lease store.LeaseID) (int64, error) {
	op := opName("put", key, lease)
	if key == "" {
		return 0, fmt.Errorf("%s: %w", op, errEmptyKey)
	}
	var rev int64
	err := s.call(ctx, op, func(ctx context.Context) error {
		resp, err := s.client.Put(ctx, s.key(key), string(value), leaseOpt(lease)...)
		if err == nil {
			rev = resp.Header.Revision
		}
		return err
	})
	return rev, err
}

// Create writes the key only if it does not exist (else store.ErrExists):
// Txn(If CreateRevision == 0, Then Put).
func (s *Store) Create(ctx context.Context, key string, value []byte, lease store.LeaseID) (int64, error) {
	op := opName("create", key, lease)
	if key == "" {
		return 0, fmt.Errorf("%s: %w", op, errEmptyKey)
	}
	k := s.key(key)
	rev, cur, err := s.condWrite(ctx, op, k,
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)},
		clientv3.OpPut(k, string(value), leaseOpt(lease)...))
	if err == nil && cur != 0 {
		err = fmt.Errorf("%s: %w (revision %d)", op, store.ErrExists, cur)
	}
	return rev, err
}

// CompareAndSwap writes the key only if its revision is still prevRev:
// store.ErrNotFound if it is gone, store.ErrConflict if it changed.
func (s *Store) CompareAndSwap(ctx context.Context, key string, value []byte, prevRev int64, lease store.LeaseID) (int64, error) {
	op := opName("compare-and-swap", key, lease)
	if key == "" {
		return 0, fmt.Errorf("%s: %w", op, errEmptyKey)
	}
	k := s.key(key)
	rev, cur, err := s.condWrite(ctx, op, k, atRevision(k, prevRev), clientv3.OpPut(k, string(value), leaseOpt(lease)...))
	if err == nil && rev == 0 {
		err = revisionErr(op, cur, prevRev)
	}
	return rev, err
}

// Delete removes the key; deleting a missing key is not an error (and does
// not move the revision).
func (s *Store) Delete(ctx context.Context, key string) error {
	op := fmt.Sprintf("delete %q", key)
	if key == "" {
		return fmt.Errorf("%s: %w", op, errEmptyKey)
	}
	return s.call(ctx, op, func(ctx context.Context) error {
		_, err := s.client.Delete(ctx, s.key(key))
		return err
	})
}

// CompareAndDelete removes the key only if its revision is still prevRev:
// store.ErrNotFound if it is gone, store.ErrConflict if it changed.
func (s *Store) CompareAndDelete(ctx context.Context, key string, prevRev int64) error {
	op := fmt.Sprintf("compare-and-delete %q", key)
	if key == "" {
		return fmt.Errorf("%s: %w", op, errEmptyKey)
	}
	k := s.key(key)
	rev, cur, err := s.condWrite(ctx, op, k, atRevision(k, prevRev), clientv3.OpDelete(k))
	if err == nil && rev == 0 {
		err = revisionErr(op, cur, prevRev)
	}
	return err
}

// atRevision holds when the key exists at revision rev (Version > 0 keeps
// rev 0 from matching an absent key).
func atRevision(k string, rev int64) []clientv3.Cmp {
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(k), "=", rev),
		clientv3.Compare(clientv3.Version(k), ">", 0),
	}
}

func revisionErr(op string, cur, want int64) error {
	if cur == 0 {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	return fmt.Errorf("%s: revision %d, expected %d: %w", op, cur, want, store.ErrConflict)
}

// condWrite commits then if every cmp holds and returns the new revision;
// otherwise it returns revision 0 and the key's current mod revision (0 if
// absent), read in the same transaction.
func (s *Store) condWrite(ctx context.Context, op, k string, cmps []clientv3.Cmp, then clientv3.Op) (rev, cur int64, err error) {
	var resp *clientv3.TxnResponse
	err = s.call(ctx, op, func(ctx context.Context) (err error) {
		resp, err = s.client.Txn(ctx).If(cmps...).Then(then).Else(clientv3.OpGet(k, clientv3.WithKeysOnly())).Commit()
		return err
	})
	switch {
	case err != nil:
		return 0, 0, err
	case resp.Succeeded:
		return resp.Header.Revision, 0, nil
	}
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		cur = kvs[0].ModRevision
	}
	return 0, cur, nil
}

// Txn applies ops atomically if every cmp holds (revision 0: the key is
// absent); otherwise nothing is applied and the error wraps
// store.ErrConflict, naming the first compare that failed. A key may appear
// in one op only, and etcd caps a transaction at --max-txn-ops (128 by
// default) ops.
func (s *Store) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	if err := checkTxn(cmps, ops); err != nil {
		return 0, err
	}
	conds := make([]clientv3.Cmp, len(cmps))
	var reads []clientv3.Op
	seen := map[string]bool{}
	for i, c := range cmps {
		k := s.key(c.Key)
		if c.Revision == 0 {
			conds[i] = clientv3.Compare(clientv3.CreateRevision(k), "=", 0)
		} else {
			conds[i] = clientv3.Compare(clientv3.ModRevision(k), "=", c.Revision)
		}
		if !seen[k] {
			seen[k] = true
			reads = append(reads, clientv3.OpGet(k, clientv3.WithKeysOnly()))
		}
	}
	writes := make([]clientv3.Op, len(ops))
	for i, o := range ops {
		if o.Type == store.OpPut {
			writes[i] = clientv3.OpPut(s.key(o.Key), string(o.Value), leaseOpt(o.Lease)...)
		} else {
			writes[i] = clientv3.OpDelete(s.key(o.Key))
		}
	}
	var resp *clientv3.TxnResponse
	err := s.call(ctx, "txn", func(ctx context.Context) (err error) {
		resp, err = s.client.Txn(ctx).If(conds...).Then(writes...).Else(reads...).Commit()
		return err
	})
	if err != nil {
		return 0, err
	}
	if !resp.Succeeded {
		return 0, s.txnConflict(cmps, resp)
	}
	return resp.Header.Revision, nil
}

// txnConflict names the first compare that did not hold, from the reads of
// the Else branch (taken at the same revision as the compares).
func (s *Store) txnConflict(cmps []store.Cmp, resp *clientv3.TxnResponse) error {
	current := map[string]int64{}
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().GetKvs() {
			current[s.storeKey(kv.Key)] = kv.ModRevision
		}
	}
	for _, c := range cmps {
		if rev := current[c.Key]; rev != c.Revision {
			return fmt.Errorf("txn: %q at revision %d, expected %d: %w", c.Key, rev, c.Revision, store.ErrConflict)
		}
	}
	return fmt.Errorf("txn: %w", store.ErrConflict)
}

// checkTxn rejects what every backend rejects (store.CheckTxn).
func checkTxn(cmps []store.Cmp, ops []store.Op) error { return store.CheckTxn(cmps, ops) }

func (s *Store) toKV(kv *mvccpb.KeyValue) store.KV {
	return store.KV{Key: s.storeKey(kv.Key), Value: kv.Value, Revision: kv.ModRevision, Lease: store.LeaseID(kv.Lease)}
}

func leaseOpt(l store.LeaseID) []clientv3.OpOption {
	if l == store.NoLease {
		return nil
	}
	return []clientv3.OpOption{clientv3.WithLease(clientv3.LeaseID(l))}
}

// opName names a write in errors: `put "k"`, `put "k" with lease 7`.
func opName(verb, key string, lease store.LeaseID) string {
	if lease == store.NoLease {
		return fmt.Sprintf("%s %q", verb, key)
	}
	return fmt.Sprintf("%s %q with lease %d", verb, key, lease)
}
