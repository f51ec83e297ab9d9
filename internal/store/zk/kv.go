package zk

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	gozk "github.com/go-zookeeper/zk"

	"github.com/tether-net/tether/internal/store"
)

var errEmptyKey = store.ErrEmptyKey

// readers bounds the reads one call keeps in flight (List, Txn).
const readers = 16

// listAttempts is how often List reads again to get a listing no write
// came through (rev unchanged from before to after).
const listAttempts = 3

// Get returns the key or store.ErrNotFound: one getData of kv/<key>. Reads
// are ZooKeeper reads: never older than what this Store already saw, but a
// follower may lag the leader by its replication delay.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	op := fmt.Sprintf("get %q", key)
	if key == "" {
		return store.KV{}, fmt.Errorf("%s: %w", op, errEmptyKey)
	}
	var kv store.KV
	var ok bool
	err := s.call(ctx, op, func(ctx context.Context) (err error) {
		kv, ok, err = s.readKey(ctx, key)
		return err
	})
	if err == nil && !ok {
		err = fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	return kv, err
}

// readKey reads one key; false if it does not exist.
func (s *Store) readKey(ctx context.Context, key string) (store.KV, bool, error) {
	var data []byte
	var st *gozk.Stat
	err := s.run(ctx, func() (err error) {
		data, st, err = s.conn.Get(s.keyPath(key))
		return err
	})
	switch {
	case errors.Is(err, gozk.ErrNoNode):
		return store.KV{}, false, nil
	case err != nil:
		return store.KV{}, false, err
	}
	l, v, err := decodeValue(data)
	if err != nil {
		return store.KV{}, false, fmt.Errorf("key %q: %w", key, err)
	}
	return store.KV{Key: key, Value: v, Revision: st.Mzxid, Lease: l}, true, nil
}

// readKeys reads keys concurrently and returns those that exist.
func (s *Store) readKeys(ctx context.Context, keys []string) (map[string]store.KV, error) {
	out := make(map[string]store.KV, len(keys))
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, readers)
	var wg sync.WaitGroup
	for _, k := range keys {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			kv, ok, err := s.readKey(ctx, k)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil && firstErr == nil:
				firstErr = err
			case ok:
				out[k] = kv
			}
		})
	}
	wg.Wait()
	return out, firstErr
}

// List returns every key starting with prefix, sorted bytewise: one
// getChildren of kv/, then the matching keys read concurrently. If rev
// moved meanwhile (a write came through) it reads again, up to 3 times, so
// the listing is normally as of one revision; under a steady stream of
// writes the last listing is returned, each key as it was when read.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, error) {
	var out []store.KV
	err := s.call(ctx, fmt.Sprintf("list %q", prefix), func(ctx context.Context) error {
		for range listAttempts {
			before, err := s.revVersion(ctx)
			if err != nil {
				return err
			}
			if out, err = s.listOnce(ctx, prefix); err != nil {
				return err
			}
			if after, err := s.revVersion(ctx); err != nil || after == before {
				return err
			}
		}
		return nil
	})
	return out, err
}

func (s *Store) listOnce(ctx context.Context, prefix string) ([]store.KV, error) {
	var names []string
	err := s.run(ctx, func() (err error) {
		names, _, err = s.conn.Children(s.root + "/kv")
		return err
	})
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, n := range names {
		if k, ok := unescapeKey(n); ok && strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	found, err := s.readKeys(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make([]store.KV, 0, len(found))
	for _, kv := range found {
		out = append(out, kv)
	}
	slices.SortFunc(out, func(a, b store.KV) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// revVersion is rev's version: it moves with every write.
func (s *Store) revVersion(ctx context.Context) (int32, error) {
	var st *gozk.Stat
	err := s.run(ctx, func() (err error) {
		_, st, err = s.conn.Exists(s.revPath())
		return err
	})
	if err != nil {
		return 0, err
	}
	return st.Version, nil
}

// Put writes the key unconditionally and returns the new revision.
func (s *Store) Put(ctx context.Context, key string, value []byte, lease store.LeaseID) (int64, error) {
	return s.write(ctx, opName("put", key, lease), []string{key}, simple(func(map[string]store.KV) ([]store.Op, error) {
		return []store.Op{{Type: store.OpPut, Key: key, Value: value, Lease: lease}}, nil
	}))
}

// Create writes the key only if it does not exist (else store.ErrExists).
// It does not read the key first: the multi's create fails if it exists,
// and only then is the key read (to report its revision).
func (s *Store) Create(ctx context.Context, key string, value []byte, lease store.LeaseID) (int64, error) {
	return s.writeBlind(ctx, opName("create", key, lease), []string{key}, simple(func(cur map[string]store.KV) ([]store.Op, error) {
		if kv, ok := cur[key]; ok {
			return nil, fmt.Errorf("%w (revision %d)", store.ErrExists, kv.Revision)
		}
		return []store.Op{{Type: store.OpPut, Key: key, Value: value, Lease: lease}}, nil
	}), true)
}

// CompareAndSwap writes the key only if its revision is still prevRev:
// store.ErrNotFound if it is gone, store.ErrConflict if it changed.
func (s *Store) CompareAndSwap(ctx context.Context, key string, value []byte, prevRev int64, lease store.LeaseID) (int64, error) {
	return s.write(ctx, opName("compare-and-swap", key, lease), []string{key}, simple(func(cur map[string]store.KV) ([]store.Op, error) {
		if err := atRevision(cur, key, prevRev); err != nil {
			return nil, err
		}
		return []store.Op{{Type: store.OpPut, Key: key, Value: value, Lease: lease}}, nil
	}))
}

// Delete removes the key; deleting a missing key is not an error and
// writes nothing (the revision stays).
func (s *Store) Delete(ctx context.Context, key string) error {
	_, err := s.write(ctx, fmt.Sprintf("delete %q", key), []string{key}, simple(func(cur map[string]store.KV) ([]store.Op, error) {
		if _, ok := cur[key]; !ok {
			return nil, nil
		}
		return []store.Op{store.Delete(key)}, nil
	}))
	return err
}

// CompareAndDelete removes the key only if its revision is still prevRev:
// store.ErrNotFound if it is gone, store.ErrConflict if it changed.
func (s *Store) CompareAndDelete(ctx context.Context, key string, prevRev int64) error {
	_, err := s.write(ctx, fmt.Sprintf("compare-and-delete %q", key), []string{key}, simple(func(cur map[string]store.KV) ([]store.Op, error) {
		if err := atRevision(cur, key, prevRev); err != nil {
			return nil, err
		}
		return []store.Op{store.Delete(key)}, nil
	}))
	return err
}

func atRevision(cur map[string]store.KV, key string, rev int64) error {
	kv, ok := cur[key]
	switch {
	case !ok:
		return store.ErrNotFound
	case kv.Revision != rev:
		return fmt.Errorf("revision %d, expected %d: %w", kv.Revision, rev, store.ErrConflict)
	}
	return nil
}

// Txn applies ops atomically if every cmp holds (revision 0: the key is
// absent); otherwise nothing is applied and the error wraps
// store.ErrConflict, naming the first compare that failed. A key may
// appear in one op only. Deletes of missing keys are no-ops (no event); a
// Txn that changes nothing writes nothing and returns the current revision.
// The whole multi (keys, lease index, log entry) must fit ZooKeeper's
// request limit, jute.maxbuffer (1 MiB by default).
func (s *Store) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	if err := checkTxn(cmps, ops); err != nil {
		return 0, err
	}
	var keys []string
	seen := map[string]bool{}
	for _, k := range append(cmpKeys(cmps), opKeys(ops)...) {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return s.write(ctx, "txn", keys, simple(func(cur map[string]store.KV) ([]store.Op, error) {
		for _, c := range cmps {
			if rev := cur[c.Key].Revision; rev != c.Revision {
				return nil, fmt.Errorf("%q at revision %d, expected %d: %w", c.Key, rev, c.Revision, store.ErrConflict)
			}
		}
		var apply []store.Op
		for _, o := range ops {
			if _, ok := cur[o.Key]; o.Type == store.OpDelete && !ok {
				continue
			}
			apply = append(apply, o)
		}
		return apply, nil
	}))
}

func cmpKeys(cmps []store.Cmp) []string {
	out := make([]string, len(cmps))
	for i, c := range cmps {
		out[i] = c.Key
	}
	return out
}

func opKeys(ops []store.Op) []string {
	out := make([]string, len(ops))
	for i, o := range ops {
		out[i] = o.Key
	}
	return out
}

// checkTxn rejects what every backend rejects (store.CheckTxn).
func checkTxn(cmps []store.Cmp, ops []store.Op) error { return store.CheckTxn(cmps, ops) }

// decideFunc turns the current state of a write's keys (those that exist)
// into the ops to apply, or refuses with the error the call returns. extra
// are znode changes that go with the ops (the lease reaper's cleanup); with
// no ops they are applied on their own, outside the log.
type decideFunc func(cur map[string]store.KV) (ops []store.Op, extra []any, err error)

// write is every write: read the keys, decide, apply in one multi guarded
// by rev's version; on a lost race (another write came in between) read
// and decide again. Bounded by the request timeout.
func (s *Store) write(ctx context.Context, op string, keys []string, decide decideFunc) (int64, error) {
	return s.writeBlind(ctx, op, keys, decide, false)
}

// writeBlind is write; blind first tries the decision without reading the
// keys (as if none existed): if one does, the multi's create of it fails
// and the write is decided again on what is read (Create).
func (s *Store) writeBlind(ctx context.Context, op string, keys []string, decide decideFunc, blind bool) (int64, error) {
	for _, k := range keys {
		if k == "" {
			return 0, fmt.Errorf("%s: %w", op, errEmptyKey)
		}
	}
	var rev int64
	err := s.call(ctx, op, func(ctx context.Context) (err error) {
		rev, err = s.commit(ctx, keys, decide, blind)
		return err
	})
	return rev, err
}

// simple adapts a decision without extra znode changes.
func simple(fn func(cur map[string]store.KV) ([]store.Op, error)) decideFunc {
	return func(cur map[string]store.KV) ([]store.Op, []any, error) {
		ops, err := fn(cur)
		return ops, nil, err
	}
}

// commit runs one write under this Store's write lock.
func (s *Store) commit(ctx context.Context, keys []string, decide decideFunc, blind bool) (int64, error) {
	select {
	case s.wlock <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-s.wlock }()
	for attempt := 0; ; attempt++ {
		n, ver, err := s.revState(ctx)
		if err != nil {
			return 0, err
		}
		cur := map[string]store.KV{}
		guessed := false
		var unknown []string
		if !blind {
			if cur, unknown, guessed = s.fromKnown(keys); !guessed {
				if cur, err = s.readKeys(ctx, keys); err != nil {
					return 0, err
				}
			}
		}
		ops, extra, err := decide(cur)
		if guessed && (err != nil || !createsAll(ops, unknown)) {
			// decide again on what the server says
			if cur, err = s.readKeys(ctx, keys); err != nil {
				return 0, err
			}
			guessed = false
			ops, extra, err = decide(cur)
		}
		if err != nil {
			return 0, errStore{err}
		}
		if len(ops) == 0 {
			if len(extra) > 0 {
				if err := s.run(ctx, func() error { _, err := s.conn.Multi(extra...); return err }); err != nil {
					return 0, err
				}
			}
			return s.currentRevision(ctx)
		}
		zops, checks := s.multiOps(n, ver, cur, ops, extra)
		resp, err := s.multi(ctx, zops)
		if err == nil {
			st := resp[0].Stat
			s.setRev(n+1, st.Version)
			s.remember(keys, cur, ops, extra, st.Mzxid)
			s.maybeTrim(n + 1)
			return st.Mzxid, nil
		}
		s.forgetRev()
		failed := failedOp(resp)
		switch {
		case failed == 0 && errors.Is(err, gozk.ErrBadVersion):
			if err := backoff(ctx, attempt); err != nil {
				return 0, err
			}
		case checks[failed] != store.NoLease && errors.Is(err, gozk.ErrNoNode):
			return 0, errStore{store.ErrLeaseNotFound}
		case (blind || guessed) && (errors.Is(err, gozk.ErrNodeExists) || errors.Is(err, gozk.ErrNoNode)):
			blind = false // a key exists (or is gone): decide on what it is
		case failed >= 0:
			return 0, fmt.Errorf("%s: %w (the znodes under %s were changed by something else than this store)", describe(zops[failed]), err, s.root)
		default:
			return 0, err
		}
	}
}

// multi is one Multi bounded by ctx (run's pattern, with the responses
// handed over only when the call returned).
func (s *Store) multi(ctx context.Context, ops []any) ([]gozk.MultiResponse, error) {
	type result struct {
		resp []gozk.MultiResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := s.conn.Multi(ops...)
		done <- result{resp, err}
	}()
	select {
	case r := <-done:
		return r.resp, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, ErrClosed
	}
}

// multiOps builds the multi of a write: rev's version check and bump, the
// lease checks, the key and lease-index changes, the log entry. checks maps
// the index of each lease check to its lease.
func (s *Store) multiOps(n int64, ver int32, cur map[string]store.KV, ops []store.Op, extra []any) ([]any, map[int]store.LeaseID) {
	zops := []any{&gozk.SetDataRequest{Path: s.revPath(), Data: strconv.AppendInt(nil, n+1, 10), Version: ver}}
	checks := map[int]store.LeaseID{}
	checked := map[store.LeaseID]bool{}
	for _, o := range ops {
		if o.Type == store.OpPut && o.Lease != store.NoLease && !checked[o.Lease] {
			checked[o.Lease] = true
			checks[len(zops)] = o.Lease
			zops = append(zops, &gozk.CheckVersionRequest{Path: s.alivePath(o.Lease), Version: -1})
		}
	}
	for _, o := range ops {
		old, exists := cur[o.Key]
		if exists && old.Lease != store.NoLease && (o.Type == store.OpDelete || o.Lease != old.Lease) {
			zops = append(zops, &gozk.DeleteRequest{Path: s.leaseKeyPath(old.Lease, o.Key), Version: -1})
		}
		switch {
		case o.Type == store.OpDelete:
			zops = append(zops, &gozk.DeleteRequest{Path: s.keyPath(o.Key), Version: -1})
			continue
		case exists:
			zops = append(zops, &gozk.SetDataRequest{Path: s.keyPath(o.Key), Data: encodeValue(o.Lease, o.Value), Version: -1})
		default:
			zops = append(zops, &gozk.CreateRequest{Path: s.keyPath(o.Key), Data: encodeValue(o.Lease, o.Value), Acl: acl})
		}
		if o.Lease != store.NoLease && (!exists || old.Lease != o.Lease) {
			zops = append(zops, &gozk.CreateRequest{Path: s.leaseKeyPath(o.Lease, o.Key), Acl: acl})
		}
	}
	zops = append(zops, extra...)
	zops = append(zops, &gozk.CreateRequest{Path: s.logPath(n + 1), Data: encodeLog(ops), Acl: acl})
	return zops, checks
}

// failedOp is the index of the op a failed multi failed on, -1 if unknown.
func failedOp(resp []gozk.MultiResponse) int {
	for i, r := range resp {
		if r.Error != nil {
			return i
		}
	}
	return -1
}

// describe names a multi op in errors.
func describe(op any) string {
	switch o := op.(type) {
	case *gozk.CreateRequest:
		return "create " + o.Path
	case *gozk.SetDataRequest:
		return "set " + o.Path
	case *gozk.DeleteRequest:
		return "delete " + o.Path
	case *gozk.CheckVersionRequest:
		return "check " + o.Path
	}
	return fmt.Sprintf("%T", op)
}

// revState is rev's counter and version: cached from this Store's last
// write, read when unknown.
func (s *Store) revState(ctx context.Context) (int64, int32, error) {
	s.revMu.Lock()
	if s.revOK {
		defer s.revMu.Unlock()
		return s.revN, s.revVer, nil
	}
	s.revMu.Unlock()
	var data []byte
	var st *gozk.Stat
	err := s.run(ctx, func() (err error) {
		data, st, err = s.conn.Get(s.revPath())
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	n, err := parseCounter(data)
	if err != nil {
		return 0, 0, err
	}
	s.setRev(n, st.Version)
	s.revMu.Lock()
	s.known = nil // read from the server: others may have written
	s.revMu.Unlock()
	return n, st.Version, nil
}

func (s *Store) setRev(n int64, ver int32) {
	s.revMu.Lock()
	defer s.revMu.Unlock()
	s.revOK, s.revN, s.revVer = true, n, ver
}

func (s *Store) forgetRev() {
	s.revMu.Lock()
	defer s.revMu.Unlock()
	s.revOK, s.known = false, nil
}

// knownKey is a key's state as this Store's last writes left it.
type knownKey struct {
	kv     store.KV
	exists bool
}

// maxKnown bounds the known keys; past it they are forgotten.
const maxKnown = 4096

// fromKnown returns the state of keys as this Store's own writes left it,
// when rev was not read from the server since (another Store's write would
// have moved rev's version: the multi's version check then fails and the
// write is decided again on reads); keys it does not know are guessed
// absent and listed in unknown: the write may use the guess only for keys
// its ops create (createsAll), where the multi's create checks it. It
// saves a write the round trip that reads its keys.
func (s *Store) fromKnown(keys []string) (cur map[string]store.KV, unknown []string, ok bool) {
	s.revMu.Lock()
	defer s.revMu.Unlock()
	if !s.revOK || s.known == nil {
		return nil, nil, false
	}
	cur = make(map[string]store.KV, len(keys))
	for _, k := range keys {
		kk, ok := s.known[k]
		switch {
		case !ok:
			unknown = append(unknown, k)
		case kk.exists:
			cur[k] = kk.kv
		}
	}
	return cur, unknown, true
}

// createsAll reports whether ops put every key of keys (a put of a key
// believed absent is a create, which fails on an existing znode).
func createsAll(ops []store.Op, keys []string) bool {
	for _, k := range keys {
		if !slices.ContainsFunc(ops, func(o store.Op) bool { return o.Key == k && o.Type == store.OpPut }) {
			return false
		}
	}
	return true
}

// remember records the state of keys after a write of this Store: what
// was read (cur, absent keys included), then what its ops did at revision
// rev. A write with extra znode changes (the lease reaper's) forgets
// everything instead.
func (s *Store) remember(keys []string, cur map[string]store.KV, ops []store.Op, extra []any, rev int64) {
	s.revMu.Lock()
	defer s.revMu.Unlock()
	if len(extra) > 0 || len(s.known)+len(keys) > maxKnown {
		s.known = nil
	}
	if s.known == nil {
		s.known = map[string]knownKey{}
	}
	for _, k := range keys {
		kv, ok := cur[k]
		s.known[k] = knownKey{kv: kv, exists: ok}
	}
	for _, o := range ops {
		if o.Type == store.OpDelete {
			s.known[o.Key] = knownKey{}
			continue
		}
		s.known[o.Key] = knownKey{kv: store.KV{Key: o.Key, Value: o.Value, Revision: rev, Lease: o.Lease}, exists: true}
	}
}

// currentRevision is the revision of the last write: rev's Mzxid.
func (s *Store) currentRevision(ctx context.Context) (int64, error) {
	var st *gozk.Stat
	err := s.run(ctx, func() (err error) {
		_, st, err = s.conn.Exists(s.revPath())
		return err
	})
	if err != nil {
		return 0, err
	}
	return st.Mzxid, nil
}

// opName names a write in errors: `put "k"`, `put "k" with lease 7`.
func opName(verb, key string, lease store.LeaseID) string {
	if lease == store.NoLease {
		return fmt.Sprintf("%s %q", verb, key)
	}
	return fmt.Sprintf("%s %q with lease %d", verb, key, lease)
}
