package zk

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	gozk "github.com/go-zookeeper/zk"

	"github.com/tether-net/tether/internal/store"
)

// recheckEvery bounds how long a follower waits for the next log entry
// without looking again (insurance against a lost notification).
const recheckEvery = 5 * time.Second

// retryDelay is a follower's first wait after a failed read (doubling to
// 8x while the servers stay unreachable).
const retryDelay = 100 * time.Millisecond

// Watch streams changes under prefix with revision > afterRev by reading
// the change log in counter order: one getData per write, and an exists
// watch on the next entry while there is none. afterRev 0 means from the
// current counter on, so every write that starts after Watch returns is
// seen. afterRev > 0 replays from the log: the first entry above afterRev
// is found by binary search on the entries' Czxid; if entries above
// afterRev were trimmed already, it fails with store.ErrCompacted.
//
// The channel stays open while the servers are unreachable and the watch
// goes on from the next entry when one answers again (nothing lost, nothing
// twice). It is closed when ctx ends, the store closes, the watcher fell
// Config.WatchBuffer events behind, or the log was trimmed past its
// position meanwhile: List again and re-watch.
func (s *Store) Watch(ctx context.Context, prefix string, afterRev int64) (<-chan store.Event, error) {
	op := fmt.Sprintf("watch %q", prefix)
	if afterRev > 0 {
		op = fmt.Sprintf("watch %q after revision %d", prefix, afterRev)
	}
	var next int64
	err := s.call(ctx, op, func(ctx context.Context) (err error) {
		next, err = s.logPosition(ctx, afterRev)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make(chan store.Event, s.cfg.WatchBuffer)
	f := &follower{s: s, op: op, prefix: prefix, next: next, out: out}
	if !s.goBackground(func() { f.run(ctx) }) {
		return nil, fmt.Errorf("%s: %w", op, ErrClosed)
	}
	return out, nil
}

// logPosition is the counter of the first log entry with a revision above
// afterRev (the next one to be written when afterRev is 0 or recent).
func (s *Store) logPosition(ctx context.Context, afterRev int64) (int64, error) {
	var revData, metaData []byte
	err := s.run(ctx, func() (err error) {
		if metaData, _, err = s.conn.Get(s.logDir()); err != nil {
			return err
		}
		revData, _, err = s.conn.Get(s.revPath())
		return err
	})
	if err != nil {
		return 0, err
	}
	n, err := parseCounter(revData)
	if err != nil {
		return 0, err
	}
	if afterRev <= 0 {
		return n + 1, nil
	}
	meta, err := parseLogMeta(metaData)
	if err != nil {
		return 0, err
	}
	if afterRev < meta.rev {
		return 0, errStore{fmt.Errorf("%w: history starts after revision %d", store.ErrCompacted, meta.rev)}
	}
	// First entry in (meta.through, n] whose revision is above afterRev.
	lo, hi := meta.through+1, n+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		rev, ok, err := s.entryRevision(ctx, mid)
		switch {
		case err != nil:
			return 0, err
		case !ok: // trimmed while we searched
			return 0, errStore{fmt.Errorf("%w: history trimmed past revision %d", store.ErrCompacted, afterRev)}
		case rev > afterRev:
			hi = mid
		default:
			lo = mid + 1
		}
	}
	return lo, nil
}

// entryRevision is the revision of log entry n (its Czxid).
func (s *Store) entryRevision(ctx context.Context, n int64) (int64, bool, error) {
	var ok bool
	var st *gozk.Stat
	err := s.run(ctx, func() (err error) {
		ok, st, err = s.conn.Exists(s.logPath(n))
		return err
	})
	if err != nil || !ok {
		return 0, false, err
	}
	return st.Czxid, true, nil
}

// follower delivers one watch: it reads log entry next, then next+1, ...
type follower struct {
	s      *Store
	op     string
	prefix string
	next   int64
	out    chan store.Event
}

func (f *follower) run(ctx context.Context) {
	defer close(f.out)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // the store closing ends the watch too
		select {
		case <-f.s.bg.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	failures := 0
	for ctx.Err() == nil {
		wait, err := f.step(ctx)
		switch {
		case errors.Is(err, errStop):
			return
		case err != nil:
			// Unreachable or lost connection: keep the position, retry.
			failures++
			t := time.NewTimer(retryDelay << min(failures-1, 3))
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
			continue
		}
		failures = 0
		if wait != nil {
			t := time.NewTimer(recheckEvery)
			select {
			case <-wait:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
	}
}

// errStop ends a follower (trimmed past it, or its reader fell behind).
var errStop = errors.New("watch ends")

// step delivers entry next if it exists (nil wait: go on at once), or
// returns a channel that fires when it is created.
func (f *follower) step(ctx context.Context) (<-chan gozk.Event, error) {
	s := f.s
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	var data []byte
	var st *gozk.Stat
	err := s.run(rctx, func() (err error) {
		data, st, err = s.conn.Get(s.logPath(f.next))
		return err
	})
	switch {
	case err == nil:
		return nil, f.deliver(data, st.Czxid)
	case !errors.Is(err, gozk.ErrNoNode):
		return nil, err
	}
	// rev before the exists check: if the counter had reached next when
	// read, entry next was written before the check and missing means
	// trimmed.
	var exists bool
	var wait <-chan gozk.Event
	var revData []byte
	err = s.run(rctx, func() (err error) {
		if revData, _, err = s.conn.Get(s.revPath()); err != nil {
			return err
		}
		exists, _, wait, err = s.conn.ExistsW(s.logPath(f.next))
		return err
	})
	if err != nil || exists {
		return nil, err
	}
	n, err := parseCounter(revData)
	if err != nil {
		return nil, err
	}
	if n >= f.next {
		s.log.Warn("zookeeper watcher fell behind the change log's history; its channel is closed", "watch", f.op, "entry", f.next)
		return nil, errStop
	}
	return wait, nil
}

// deliver sends the events of one log entry (revision rev) under the
// prefix, in op order, and moves to the next entry.
func (f *follower) deliver(data []byte, rev int64) error {
	ops, err := decodeLog(data)
	if err != nil {
		f.s.log.Warn("zookeeper watch: unreadable change log entry; its channel is closed", "watch", f.op, "entry", f.next, "err", err)
		return errStop
	}
	for _, op := range ops {
		if !strings.HasPrefix(op.Key, f.prefix) {
			continue
		}
		ev := store.Event{Type: store.EventPut, KV: store.KV{Key: op.Key, Value: op.Value, Revision: rev, Lease: op.Lease}}
		if op.Type == store.OpDelete {
			ev = store.Event{Type: store.EventDelete, KV: store.KV{Key: op.Key, Revision: rev}}
		}
		select {
		case f.out <- ev:
		default:
			f.s.log.Warn("zookeeper watcher fell behind; its channel is closed", "watch", f.op, "queue", cap(f.out))
			return errStop
		}
	}
	f.next++
	return nil
}

// maybeTrim starts a trim of the change log every History/10 writes, in
// the background: entries older than the last History go.
func (s *Store) maybeTrim(n int64) {
	every := int64(max(1, s.cfg.History/10))
	if n%every != 0 || n <= int64(s.cfg.History) {
		return
	}
	s.goBackground(func() {
		ctx, cancel := context.WithTimeout(s.bg, s.cfg.RequestTimeout)
		defer cancel()
		if err := s.trim(ctx, n-int64(s.cfg.History)); err != nil {
			s.log.Debug("zookeeper: trimming the change log failed; the next trim retries", "err", err)
		}
	})
}

// trimBatch is how many log entries one multi deletes.
const trimBatch = 200

// trim deletes log entries up to counter through. It first records
// through and its revision in log's data (version-checked, so two trims
// never interleave): from then on Watch refuses afterRev below that
// revision; then it deletes every entry at or below through, whatever an
// earlier failed trim left.
func (s *Store) trim(ctx context.Context, through int64) error {
	var metaData []byte
	var st *gozk.Stat
	err := s.run(ctx, func() (err error) {
		metaData, st, err = s.conn.Get(s.logDir())
		return err
	})
	if err != nil {
		return err
	}
	meta, err := parseLogMeta(metaData)
	if err != nil || meta.through >= through {
		return err
	}
	rev, ok, err := s.entryRevision(ctx, through)
	if err != nil || !ok {
		return err
	}
	newMeta := logMeta{through: through, rev: rev}
	err = s.run(ctx, func() error {
		_, err := s.conn.Set(s.logDir(), newMeta.encode(), st.Version)
		return err
	})
	if err != nil {
		return err
	}
	var names []string
	err = s.run(ctx, func() (err error) {
		names, _, err = s.conn.Children(s.logDir())
		return err
	})
	if err != nil {
		return err
	}
	var old []string
	for _, name := range names {
		if n, err := strconv.ParseInt(name, 10, 64); err == nil && n <= through {
			old = append(old, name)
		}
	}
	slices.Sort(old)
	for batch := range slices.Chunk(old, trimBatch) {
		ops := make([]any, len(batch))
		for i, name := range batch {
			ops[i] = &gozk.DeleteRequest{Path: s.logDir() + "/" + name, Version: -1}
		}
		if err := s.run(ctx, func() error { _, err := s.conn.Multi(ops...); return err }); err != nil {
			return err
		}
	}
	return nil
}
