package etcd

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/storetest"
)

// A three-member cluster, members SIGKILLed one at a time:
//   - a follower dies: every call through the store keeps working, and a
//     store that talks to that follower only gets, once it is back, the
//     changes made meanwhile on its open watch (once each), and from a new
//     watch resumed at its last revision;
//   - the leader dies: calls fail for at most the election (and one
//     request timeout) and then work again, on the same store; its watch
//     misses nothing and repeats nothing; a lease granted before is still
//     alive.
func TestCluster(t *testing.T) {
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) { testCluster(t, fl.get(t)) })
	}
}

func testCluster(t *testing.T, f flavour) {
	c := startCluster(t, f, clusterOptions{size: 3})
	ctx := t.Context()
	prefix := uniquePrefix()
	open := func(ms ...*member) *Store {
		cfg := c.config(prefix, ms...)
		cfg.RequestTimeout = 3 * time.Second
		return mustOpen(t, cfg)
	}
	s := open()
	lease, err := s.Grant(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	all, err := s.Watch(ctx, "c/", 0)
	if err != nil {
		t.Fatal(err)
	}
	var acked []string // every acknowledged write, as the watch must show it

	leader := c.leader(t, s)
	follower := c.members[(leader+1)%3]
	lone := open(follower) // talks to the follower only
	loneCh, err := lone.Watch(ctx, "c/", 0)
	if err != nil {
		t.Fatal(err)
	}
	r0 := storetest.PutRev(t, s, "c/0")
	acked = append(acked, fmt.Sprintf(`put "c/0"@%d`, r0))
	storetest.ExpectEvents(t, loneCh, acked...)

	follower.kill()
	// A call that was on its way to the follower as it died fails (a
	// write's fate is then unknown); the next ones go to the others.
	mustRecover(t, s, "killing a follower", 0)
	var meanwhile []string
	for i := range 10 {
		meanwhile = append(meanwhile, writeOne(t, s, fmt.Sprintf("c/f%d", i))...)
	}
	acked = append(acked, meanwhile...)
	follower.start()
	c.waitReady(follower)
	storetest.ExpectEvents(t, loneCh, meanwhile...)
	resumed, err := lone.Watch(ctx, "c/", r0)
	if err != nil {
		t.Fatalf("Watch after %d on the restarted member: %v", r0, err)
	}
	storetest.ExpectEvents(t, resumed, meanwhile...)

	old := c.members[leader]
	old.kill()
	// Calls fail until a new leader is elected; a write that a follower
	// had forwarded to the dead leader waits for its request timeout.
	mustRecover(t, s, "killing the leader", 20*time.Second)
	for i := range 10 {
		acked = append(acked, writeOne(t, s, fmt.Sprintf("c/n%d", i))...)
	}
	if err := s.KeepAlive(ctx, lease); err != nil {
		t.Fatalf("KeepAlive after the leader change: %v", err)
	}
	if now := c.leader(t, s); c.members[now] == old {
		t.Fatalf("leader is still the killed member %s", old.name)
	}
	storetest.ExpectEvents(t, all, acked...)
	storetest.ExpectQuiet(t, all)
}

// mustRecover writes probe keys (outside the watched prefix) until one
// succeeds; failures must say the store is unreachable, and may go on for
// at most limit (0: only the first call may fail).
func mustRecover(t *testing.T, s *Store, what string, limit time.Duration) {
	t.Helper()
	start := time.Now()
	for i := 0; ; i++ {
		_, err := s.Put(t.Context(), fmt.Sprintf("probe/%d", i), nil, store.NoLease)
		if err == nil {
			t.Logf("writes work %v after %s (%d failed)", time.Since(start).Round(time.Millisecond), what, i)
			return
		}
		if !errors.Is(err, ErrUnreachable) {
			t.Fatalf("after %s: %v, want ErrUnreachable", what, err)
		}
		if (limit == 0 && i > 0) || (limit > 0 && time.Since(start) > limit) {
			t.Fatalf("still failing %v after %s: %v", time.Since(start).Round(time.Millisecond), what, err)
		}
		t.Logf("after %s: %v", what, err)
	}
}

// writeOne writes key with a Create, a CompareAndSwap and a Txn, checks
// it with a List and returns the three watch events.
func writeOne(t *testing.T, s *Store, key string) []string {
	t.Helper()
	ctx := t.Context()
	var revs []int64
	rev, err := s.Create(ctx, key, []byte("1"), store.NoLease)
	if err == nil {
		revs = append(revs, rev)
		rev, err = s.CompareAndSwap(ctx, key, []byte("2"), rev, store.NoLease)
	}
	if err == nil {
		revs = append(revs, rev)
		rev, err = s.Txn(ctx, []store.Cmp{store.AtRevision(key, rev)}, []store.Op{store.Put(key, []byte("3"))})
	}
	if err == nil {
		revs = append(revs, rev)
		var kvs []store.KV
		kvs, err = s.List(ctx, key)
		if err == nil && (len(kvs) != 1 || kvs[0].Revision != rev) {
			err = fmt.Errorf("List(%q) = %+v, want it at %d", key, kvs, rev)
		}
	}
	if err != nil {
		t.Fatalf("write %q: %v", key, err)
	}
	var evs []string
	for _, r := range revs {
		evs = append(evs, fmt.Sprintf(`put %q@%d`, key, r))
	}
	return evs
}

// leader returns the index of the member that leads, asking the members
// that answer.
func (c *cluster) leader(t *testing.T, s *Store) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for i, m := range c.members {
			if !m.running() {
				continue
			}
			resp, err := s.client.Status(t.Context(), m.clientAddr)
			if err == nil && resp.Leader != 0 && resp.Leader == resp.Header.MemberId {
				return i
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no leader within 20s")
	return -1
}
