package storetest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/store"
)

// Helpers for a distributed backend's outage tests (etcd, ZooKeeper): the
// server is killed and restarted by the backend's own harness; these check
// what the Store does meanwhile and after.

// AssertUnreachable makes every kind of call, concurrently, and expects each
// to fail with store.ErrUnreachable within timeout (plus scheduling slack).
func AssertUnreachable(t *testing.T, s store.Store, timeout time.Duration, lease store.LeaseID) {
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
			case !errors.Is(err, store.ErrUnreachable) || !strings.Contains(err.Error(), "store unreachable"):
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

// WaitRecovered waits until a read through s succeeds again and returns
// how long that took.
func WaitRecovered(t *testing.T, s store.Store, limit time.Duration) time.Duration {
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

// PutRev writes key and returns the write's revision.
func PutRev(t *testing.T, s store.Store, key string) int64 {
	t.Helper()
	rev, err := s.Put(t.Context(), key, []byte("v"), store.NoLease)
	if err != nil {
		t.Fatalf("Put %q: %v", key, err)
	}
	return rev
}

// ExpectEvents reads len(want) events, formatted as `put "k"@rev`.
func ExpectEvents(t *testing.T, ch <-chan store.Event, want ...string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for i, w := range want {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("event %d: channel closed, want %s", i, w)
			}
			if got := FormatEvent(ev); got != w {
				t.Fatalf("event %d = %s, want %s", i, got, w)
			}
		case <-timeout:
			t.Fatalf("event %d: none within 10s, want %s", i, w)
		}
	}
}

// FormatEvent writes an event as `put "k"@rev` or `delete "k"@rev`.
func FormatEvent(ev store.Event) string {
	kind := map[store.EventType]string{store.EventPut: "put", store.EventDelete: "delete"}[ev.Type]
	return fmt.Sprintf("%s %q@%d", kind, ev.KV.Key, ev.KV.Revision)
}

// ExpectQuiet checks that no further event (a duplicate) arrives soon.
func ExpectQuiet(t *testing.T, chs ...<-chan store.Event) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	for _, ch := range chs {
		select {
		case ev := <-ch:
			t.Fatalf("unexpected event %s", FormatEvent(ev))
		default:
		}
	}
}

// ExpectConnected fails unless s's store.Connectivity says what is
// expected: connected (nil), or down (an error wrapping
// store.ErrUnreachable) within wait, the client's connection having
// dropped with the server.
func ExpectConnected(t *testing.T, s store.Store, want bool, wait time.Duration) {
	t.Helper()
	if _, ok := s.(store.Connectivity); !ok {
		t.Fatalf("%T does not implement store.Connectivity", s)
	}
	deadline := time.Now().Add(wait)
	for {
		err := store.Connected(s)
		switch {
		case want && err == nil, !want && errors.Is(err, store.ErrUnreachable):
			return
		case time.Now().After(deadline):
			t.Fatalf("Connected() = %v after %v, want connected %v", err, wait, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
