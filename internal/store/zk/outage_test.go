package zk

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/store"
)

// The server is SIGKILLed: every call fails within the request timeout
// saying the store is unreachable, and the watch stays open. It is started
// again on the same data dir: the same store works again by itself, its
// watch goes on after the last delivered revision (the changes made since,
// nothing twice), a new watch from that revision sees the same, and the
// lease granted before is still alive.
func TestOutage(t *testing.T) {
	const timeout = time.Second
	z := startServer(t)
	cfg := config(z, uniquePrefix())
	cfg.DialTimeout, cfg.RequestTimeout = timeout, timeout
	s := mustOpen(t, cfg)
	ctx := t.Context()
	lease, err := s.Grant(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "leased", nil, lease); err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(ctx, "o/", 0)
	if err != nil {
		t.Fatal(err)
	}
	r1 := mustPutRev(t, s, "o/1")
	expectEvents(t, ch, fmt.Sprintf(`put "o/1"@%d`, r1))

	z.Stop()
	assertUnreachable(t, s, timeout, lease)
	select {
	case ev, ok := <-ch:
		t.Fatalf("watch during the outage: %+v, open %v; want it quietly open", ev, ok)
	default:
	}

	time.Sleep(4 * time.Second)
	z.Start()
	back := waitRecovered(t, s, 10*time.Second)
	t.Logf("the store answered again %v after the server was ready", back.Round(time.Millisecond))
	if back > 3*time.Second { // the client retries every second
		t.Errorf("the store answered %v after the server, want at most 3s", back)
	}
	r2 := mustPutRev(t, s, "o/2")
	r3, err := s.Txn(ctx, nil, []store.Op{store.Delete("o/1"), store.Put("o/3", []byte("v"))})
	if err != nil {
		t.Fatalf("Txn after the restart: %v", err)
	}
	want := []string{fmt.Sprintf(`put "o/2"@%d`, r2), fmt.Sprintf(`delete "o/1"@%d`, r3), fmt.Sprintf(`put "o/3"@%d`, r3)}
	expectEvents(t, ch, want...)
	resumed, err := s.Watch(ctx, "o/", r1)
	if err != nil {
		t.Fatalf("Watch after %d: %v", r1, err)
	}
	expectEvents(t, resumed, want...)
	expectQuiet(t, ch, resumed)
	if err := s.KeepAlive(ctx, lease); err != nil {
		t.Fatalf("KeepAlive of a lease granted before the outage: %v", err)
	}
	if kv, err := s.Get(ctx, "leased"); err != nil || kv.Lease != lease {
		t.Fatalf("leased key after the outage = %+v, %v", kv, err)
	}
}

// assertUnreachable makes every kind of call, concurrently, and expects
// each to fail with ErrUnreachable within timeout (plus scheduling slack).
func assertUnreachable(t *testing.T, s *Store, timeout time.Duration, lease store.LeaseID) {
	t.Helper()
	ctx := t.Context()
	calls := map[string]func() error{
		"Get":  func() error { _, err := s.Get(ctx, "o/1"); return err },
		"List": func() error { _, err := s.List(ctx, "o/"); return err },
		"Put":  func() error { _, err := s.Put(ctx, "o/x", nil, store.NoLease); return err },
		"Create": func() error {
			_, err := s.Create(ctx, "o/y", nil, store.NoLease)
			return err
		},
		"CompareAndSwap": func() error {
			_, err := s.CompareAndSwap(ctx, "o/1", nil, 1, store.NoLease)
			return err
		},
		"Delete":           func() error { return s.Delete(ctx, "o/z") },
		"CompareAndDelete": func() error { return s.CompareAndDelete(ctx, "o/1", 1) },
		"Txn": func() error {
			_, err := s.Txn(ctx, []store.Cmp{store.Absent("o/t")}, []store.Op{store.Put("o/t", nil)})
			return err
		},
		"Watch":     func() error { _, err := s.Watch(ctx, "o/", 0); return err },
		"Grant":     func() error { _, err := s.Grant(ctx, time.Minute); return err },
		"KeepAlive": func() error { return s.KeepAlive(ctx, lease) },
	}
	var wg sync.WaitGroup
	for name, call := range calls {
		wg.Go(func() {
			start := time.Now()
			err := call()
			d := time.Since(start)
			switch {
			case err == nil:
				t.Errorf("%s succeeded with the store down", name)
			case !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "store unreachable"):
				t.Errorf("%s: err = %v, want ErrUnreachable", name, err)
			case d > timeout+time.Second:
				t.Errorf("%s failed after %v, request timeout %v", name, d, timeout)
			default:
				t.Logf("%s: %v after %v", name, err, d.Round(time.Millisecond))
			}
		})
	}
	wg.Wait()
}

// waitRecovered waits until a read through s succeeds again.
func waitRecovered(t *testing.T, s *Store, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		_, err := s.Get(t.Context(), "probe")
		if errors.Is(err, store.ErrNotFound) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("store not back %v after the server: %v", limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mustPutRev(t *testing.T, s store.Store, key string) int64 {
	t.Helper()
	rev, err := s.Put(t.Context(), key, []byte("v"), store.NoLease)
	if err != nil {
		t.Fatalf("Put %q: %v", key, err)
	}
	return rev
}

// expectEvents reads len(want) events, formatted as `put "k"@rev`.
func expectEvents(t *testing.T, ch <-chan store.Event, want ...string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for i, w := range want {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("event %d: channel closed, want %s", i, w)
			}
			if got := formatEvent(ev); got != w {
				t.Fatalf("event %d = %s, want %s", i, got, w)
			}
		case <-timeout:
			t.Fatalf("event %d: none within 10s, want %s", i, w)
		}
	}
}

func formatEvent(ev store.Event) string {
	kind := map[store.EventType]string{store.EventPut: "put", store.EventDelete: "delete"}[ev.Type]
	return fmt.Sprintf("%s %q@%d", kind, ev.KV.Key, ev.KV.Revision)
}

// expectQuiet checks that no further event (a duplicate) arrives soon.
func expectQuiet(t *testing.T, chs ...<-chan store.Event) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	for _, ch := range chs {
		select {
		case ev := <-ch:
			t.Fatalf("unexpected event %s", formatEvent(ev))
		default:
		}
	}
}
