package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tether-net/tether/internal/store"
)

// Watch streams changes under prefix with revision > afterRev: an etcd
// watch from revision afterRev+1 (afterRev 0: from the revision at which the
// server registered the watch). It returns once the server has registered
// the watch, so every write that starts after Watch returns is seen.
//
// Replay reaches back to the cluster's last compaction: an older afterRev
// fails with store.ErrCompacted. While members are unreachable the channel
// stays open and the client resumes the watch from the last delivered
// revision when one answers again (no event lost, none repeated). The
// channel is closed when ctx ends, the store closes, the history the
// resumed watch needs was compacted meanwhile, the member lost its leader
// for several election timeouts (the watch requires a leader, so a
// partitioned member cannot keep it silently stale), or the watcher fell
// Config.WatchBuffer events behind. A close with ctx still live means: List
// again and re-watch.
func (s *Store) Watch(ctx context.Context, prefix string, afterRev int64) (<-chan store.Event, error) {
	op := fmt.Sprintf("watch %q", prefix)
	if afterRev > 0 {
		op = fmt.Sprintf("watch %q after revision %d", prefix, afterRev)
	}
	// Fail fast on replay from compacted history (the watch itself would
	// only say so after its creation, asynchronously).
	if err := s.call(ctx, op, func(ctx context.Context) error { return s.checkHistory(ctx, prefix, afterRev) }); err != nil {
		return nil, err
	}
	wch, cancel, err := s.startWatch(ctx, op, prefix, afterRev)
	if err != nil {
		return nil, err
	}
	out := make(chan store.Event, s.cfg.WatchBuffer)
	if !s.addWatcher() {
		cancel()
		return nil, fmt.Errorf("%s: %w", op, ErrClosed)
	}
	go func() {
		defer s.watchers.Done()
		defer cancel()
		s.forward(op, wch, out)
	}()
	return out, nil
}

// startWatch opens the etcd watch and waits, at most the request timeout,
// until the server has registered it. cancel ends the watch.
func (s *Store) startWatch(ctx context.Context, op, prefix string, afterRev int64) (wch clientv3.WatchChan, cancel context.CancelFunc, err error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	from, end := s.rangeOf(prefix)
	opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithCreatedNotify()}
	if afterRev > 0 {
		opts = append(opts, clientv3.WithRev(afterRev+1))
	}
	// The client's Watch blocks while no member answers, until its context
	// ends: the timer ends it.
	timer := time.AfterFunc(s.cfg.RequestTimeout, cancel)
	wch = s.client.Watch(wctx, from, opts...)
	err = s.awaitCreated(ctx, op, wch)
	switch {
	case ctx.Err() != nil:
		err = fmt.Errorf("%s: %w", op, ctx.Err())
	case !timer.Stop():
		err = fmt.Errorf("%s: %w: etcd %s did not register the watch within %v%s",
			op, ErrUnreachable, s.cfg.where(), s.cfg.RequestTimeout, s.reason())
	}
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return wch, cancel, nil
}

// addWatcher counts a forwarding goroutine unless the store is closing.
func (s *Store) addWatcher() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return false
	}
	s.watchers.Add(1)
	return true
}

// checkHistory fails with rpctypes.ErrCompacted when revision afterRev+1 is
// no longer kept: a one-key read at that revision costs one index lookup.
func (s *Store) checkHistory(ctx context.Context, prefix string, afterRev int64) error {
	if afterRev <= 0 {
		return nil
	}
	from, _ := s.rangeOf(prefix)
	_, err := s.client.Get(ctx, from, clientv3.WithRev(afterRev+1), clientv3.WithKeysOnly())
	if errors.Is(err, rpctypes.ErrFutureRev) {
		return nil // a watch from the future waits for it
	}
	return err
}

// awaitCreated reads the first response, which must confirm the watch.
func (s *Store) awaitCreated(ctx context.Context, op string, wch clientv3.WatchChan) error {
	resp, ok := <-wch
	switch {
	case !ok:
		return s.mapErr(ctx, op, errors.New("watch closed before it was created"))
	case resp.Err() != nil:
		return s.mapErr(ctx, op, resp.Err())
	case !resp.Created:
		return fmt.Errorf("%s: etcd: first watch response is not the creation", op)
	}
	return nil
}

// forward turns etcd watch responses into store events until the etcd
// channel closes or errs, or out is full; then it closes out. It never
// blocks on the reader: a full queue drops the watcher, as bolt does.
func (s *Store) forward(op string, wch clientv3.WatchChan, out chan<- store.Event) {
	defer close(out)
	for resp := range wch {
		if err := resp.Err(); err != nil {
			if !s.closed.Load() {
				s.log.Warn("etcd watch ended; the watcher must list again and re-watch", "watch", op, "err", err)
			}
			return
		}
		for _, ev := range resp.Events {
			select {
			case out <- s.toEvent(ev):
			default:
				s.log.Warn("etcd watcher fell behind; its channel is closed", "watch", op, "queue", cap(out))
				return
			}
		}
	}
}

func (s *Store) toEvent(ev *clientv3.Event) store.Event {
	kv := store.KV{Key: s.storeKey(ev.Kv.Key), Revision: ev.Kv.ModRevision, Lease: store.LeaseID(ev.Kv.Lease)}
	if ev.Type == clientv3.EventTypeDelete {
		return store.Event{Type: store.EventDelete, KV: kv}
	}
	kv.Value = ev.Kv.Value
	return store.Event{Type: store.EventPut, KV: kv}
}
