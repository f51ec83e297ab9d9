package zk

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	gozk "github.com/go-zookeeper/zk"

	"github.com/tether-net/tether/internal/store"
)

// reapChunk bounds how many keys one expiry write deletes (a multi must
// stay under ZooKeeper's 1 MiB request limit); a lease holding more is
// deleted in several writes.
const reapChunk = 256

// maxSessionAsk caps the session timeout a Grant asks for (the protocol
// counts milliseconds in 32 bits; servers cap it far lower anyway).
const maxSessionAsk = 24 * time.Hour

// reapEvery is how often the reaper looks for dead leases even without a
// watch event (insurance against a lost notification).
const reapEvery = 10 * time.Second

// lease is a lease this Store granted: a ZooKeeper session of its own,
// owning alive/<id>. Its deadline is kept here: KeepAlive moves it, and
// when it passes the lease ends (the session's pings alone would keep it
// forever). If this process dies, the server expires the session after its
// timeout instead.
type lease struct {
	s    *Store
	id   store.LeaseID
	ttl  time.Duration
	conn *gozk.Conn
	dial *dialer

	mu       sync.Mutex
	deadline time.Time
	timer    *time.Timer
	dead     bool
}

// Grant opens a ZooKeeper session with a timeout of ttl (the server clamps
// it to its minSessionTimeout..maxSessionTimeout, by default 2-20 ticks)
// and creates alive/<session ID> owned by it; the lease ID is the session
// ID. While this Store lives the lease ends ttl after Grant or the last
// KeepAlive, whatever the session timeout; if the process dies or loses the
// server, the server ends it when the session expires.
func (s *Store) Grant(ctx context.Context, ttl time.Duration) (store.LeaseID, error) {
	op := fmt.Sprintf("grant lease (ttl %v)", ttl)
	if ttl <= 0 {
		return 0, fmt.Errorf("%s: ttl is not positive", op)
	}
	var l *lease
	err := s.call(ctx, op, func(ctx context.Context) (err error) {
		l, err = s.grant(ctx, ttl)
		return err
	})
	if err != nil {
		return 0, err
	}
	return l.id, nil
}

func (s *Store) grant(ctx context.Context, ttl time.Duration) (*lease, error) {
	var self atomic.Pointer[lease]
	ready := make(chan struct{})
	var once sync.Once
	d := newDialer(s.cfg)
	conn, err := s.connect(min(ttl, maxSessionAsk), d, func(ev gozk.Event) {
		switch {
		case ev.Type != gozk.EventSession:
		case ev.State == gozk.StateHasSession:
			once.Do(func() { close(ready) })
		case ev.State == gozk.StateExpired:
			if l := self.Load(); l != nil {
				go l.end("its session expired")
			}
		}
	})
	if err != nil {
		return nil, err
	}
	abandon := func() { go func() { d.drop(); conn.Close() }() }
	select {
	case <-ready:
	case <-ctx.Done():
		abandon()
		return nil, ctx.Err()
	}
	l := &lease{s: s, id: store.LeaseID(conn.SessionID()), ttl: ttl, conn: conn, dial: d}
	err = s.run(ctx, func() error {
		_, err := conn.Multi(
			&gozk.CreateRequest{Path: s.leaseDir(l.id), Acl: acl},
			&gozk.CreateRequest{Path: s.alivePath(l.id), Acl: acl, Flags: gozk.FlagEphemeral})
		return err
	})
	if err != nil {
		abandon()
		return nil, err
	}
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if s.closed.Load() {
		abandon()
		return nil, ErrClosed
	}
	s.leases[l.id] = l
	l.mu.Lock()
	l.deadline = time.Now().Add(ttl)
	l.timer = time.AfterFunc(ttl, l.timeUp)
	l.mu.Unlock()
	self.Store(l)
	return l, nil
}

// timeUp runs when the deadline may have passed.
func (l *lease) timeUp() {
	l.mu.Lock()
	if left := time.Until(l.deadline); left > 0 && !l.dead {
		l.timer.Reset(left)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	l.end("its ttl ran out")
}

// end ends the lease for reason, once: it is forgotten, its marker deleted
// (the moment it ends), its session closed and its keys deleted, in the
// background. If the server cannot be reached now, the session expires
// there and the reaper deletes the keys later.
func (l *lease) end(reason string) {
	if !l.markDead() {
		return
	}
	s := l.s
	s.log.Debug("zookeeper lease ended", "lease", l.id, "reason", reason)
	s.goBackground(func() {
		ctx, cancel := context.WithTimeout(s.bg, s.cfg.RequestTimeout)
		defer cancel()
		err := s.run(ctx, func() error { return s.conn.Delete(s.alivePath(l.id), -1) })
		if err != nil && !errors.Is(err, gozk.ErrNoNode) {
			l.drop() // no goodbye: the server expires the session
			return
		}
		go l.conn.Close()
		if err := s.reapLease(ctx, l.id); err != nil {
			s.log.Debug("zookeeper lease: deleting its keys failed; the reaper retries", "lease", l.id, "err", err)
		}
	})
}

// markDead flags the lease dead and forgets it; false if it already was.
func (l *lease) markDead() bool {
	l.mu.Lock()
	if l.dead {
		l.mu.Unlock()
		return false
	}
	l.dead = true
	l.timer.Stop()
	l.mu.Unlock()
	l.s.leaseMu.Lock()
	delete(l.s.leases, l.id)
	if l.s.ended == nil {
		l.s.ended = map[store.LeaseID]bool{}
	}
	l.s.ended[l.id] = true
	l.s.leaseMu.Unlock()
	return true
}

// drop cuts the session's connection without a goodbye (Store.Close, or a
// lease that could not be ended properly): the server expires it after its
// timeout.
func (l *lease) drop() {
	l.dial.drop()
	l.conn.Close()
}

// KeepAlive pushes the lease's deadline to now + ttl, after checking its
// marker still exists (so a lease revoked or expired elsewhere reports
// store.ErrLeaseNotFound). Only the Store that granted a lease can keep it
// alive: it is that Store's session.
func (s *Store) KeepAlive(ctx context.Context, id store.LeaseID) error {
	op := fmt.Sprintf("keep lease %d alive", id)
	s.leaseMu.Lock()
	l, ended := s.leases[id], s.ended[id]
	s.leaseMu.Unlock()
	if l != nil && l.expired() {
		l.end("its ttl ran out")
		l, ended = nil, true
	}
	return s.call(ctx, op, func(ctx context.Context) error {
		if ended { // granted here and over, whatever the server says yet
			return errStore{store.ErrLeaseNotFound}
		}
		var alive bool
		err := s.run(ctx, func() (err error) {
			alive, _, err = s.conn.Exists(s.alivePath(id))
			return err
		})
		switch {
		case err != nil:
			return err
		case !alive:
			if l != nil {
				l.end("its marker is gone (revoked elsewhere)")
			}
			return errStore{store.ErrLeaseNotFound}
		case l == nil:
			return errStore{fmt.Errorf("lease is held by another client: on ZooKeeper only the store that granted a lease can keep it alive")}
		case !l.push():
			return errStore{store.ErrLeaseNotFound}
		}
		return nil
	})
}

// expired reports whether the deadline passed (the timer may lag).
func (l *lease) expired() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dead || time.Now().After(l.deadline)
}

// push moves the deadline; false if the lease already ended.
func (l *lease) push() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead || time.Now().After(l.deadline) {
		return false
	}
	l.deadline = time.Now().Add(l.ttl)
	return true
}

// Revoke ends the lease at once: its marker is deleted, then its keys, in
// one write (delete events in key order); store.ErrLeaseNotFound if the
// lease had already ended. Any Store can revoke any lease.
func (s *Store) Revoke(ctx context.Context, id store.LeaseID) error {
	return s.call(ctx, fmt.Sprintf("revoke lease %d", id), func(ctx context.Context) error {
		err := s.run(ctx, func() error { return s.conn.Delete(s.alivePath(id), -1) })
		if err != nil && !errors.Is(err, gozk.ErrNoNode) {
			return err
		}
		s.leaseMu.Lock()
		l := s.leases[id]
		s.leaseMu.Unlock()
		if l != nil && l.markDead() {
			go l.conn.Close()
		}
		if rerr := s.reapLease(ctx, id); rerr != nil {
			return rerr
		}
		if err != nil {
			return errStore{store.ErrLeaseNotFound}
		}
		return nil
	})
}

// reapLease deletes the keys of a dead lease and its index: one logged
// write per reapChunk keys, in key order. A lease already reaped is fine.
func (s *Store) reapLease(ctx context.Context, id store.LeaseID) error {
	for {
		var names []string
		err := s.run(ctx, func() (err error) {
			names, _, err = s.conn.Children(s.leaseDir(id))
			return err
		})
		switch {
		case errors.Is(err, gozk.ErrNoNode):
			return nil
		case err != nil:
			return err
		}
		keys := make([]string, 0, len(names))
		for _, n := range names {
			if k, ok := unescapeKey(n); ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		last := len(keys) <= reapChunk
		if !last {
			keys = keys[:reapChunk]
		}
		_, err = s.commit(ctx, keys, func(cur map[string]store.KV) ([]store.Op, []any, error) {
			var ops []store.Op
			var extra []any
			for _, k := range keys {
				if kv, ok := cur[k]; ok && kv.Lease == id {
					ops = append(ops, store.Delete(k)) // its index entry goes with it
				} else {
					extra = append(extra, &gozk.DeleteRequest{Path: s.leaseKeyPath(id, k), Version: -1})
				}
			}
			if last {
				extra = append(extra, &gozk.DeleteRequest{Path: s.leaseDir(id), Version: -1})
			}
			return ops, extra, nil
		}, false)
		if last || err != nil {
			if errors.Is(err, gozk.ErrNoNode) {
				return nil // reaped meanwhile by another store
			}
			return err
		}
	}
}

// reaper deletes the keys of leases that ended without their Store doing
// it (the process died, or lost the server until its sessions expired):
// a lease in leases/ without its marker in alive/. It runs at Open, when
// alive/ changes, and every reapEvery. Every Store runs one; the first to
// get there writes the deletes, the others find nothing left to do.
func (s *Store) reaper() {
	for {
		ev := s.reapDead()
		t := time.NewTimer(reapEvery)
		select {
		case <-s.bg.Done():
			t.Stop()
			return
		case <-ev:
		case <-t.C:
		}
		t.Stop()
	}
}

// reapDead reaps every dead lease once and returns a channel that fires
// when alive/ changes (nil after an error: the timer retries).
func (s *Store) reapDead() <-chan gozk.Event {
	ctx, cancel := context.WithTimeout(s.bg, s.cfg.RequestTimeout)
	defer cancel()
	// leases/ first: a lease listed there and missing from alive/ read
	// after it is dead (Grant creates both at once, markers never return).
	var leases, alive []string
	var ev <-chan gozk.Event
	err := s.run(ctx, func() (err error) {
		if leases, _, err = s.conn.Children(s.root + "/leases"); err != nil {
			return err
		}
		alive, _, ev, err = s.conn.ChildrenW(s.root + "/alive")
		return err
	})
	if err != nil {
		return nil
	}
	var dead []store.LeaseID
	for _, n := range leases {
		if id, ok := parseLeaseName(n); ok && !slices.Contains(alive, n) {
			dead = append(dead, id)
		}
	}
	if len(dead) > 0 {
		// Let the lease's own Store (or another reaper) go first.
		time.Sleep(time.Duration(rand.Int64N(int64(50 * time.Millisecond))))
	}
	for _, id := range dead {
		if err := s.reapLease(ctx, id); err != nil {
			s.log.Debug("zookeeper reaper: deleting the keys of an expired lease failed", "lease", id, "err", err)
		}
	}
	return ev
}
