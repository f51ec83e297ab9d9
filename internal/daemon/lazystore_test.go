package daemon

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/bolt"
	"github.com/tether-net/tether/internal/store/storetest"
)

// The lazy wrapper over a bolt store is a store.Store like any other.
func TestLazyStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		path := filepath.Join(t.TempDir(), "store.db")
		return &lazyStore{open: func(context.Context) (store.Store, error) { return bolt.Open(path) }}
	})
}

// backend is what the fake connector hands out: a bolt store whose Close
// is counted.
type backend struct {
	store.Store
	closes int
}

func (b *backend) Close() error { b.closes++; return b.Store.Close() }

// connector is a fake cluster store that is down until up is set; it
// counts the attempts.
type connector struct {
	t        *testing.T
	mu       sync.Mutex
	up       bool
	attempts int
	opened   *backend
}

var errDown = errors.New("connection refused")

func (c *connector) open(context.Context) (store.Store, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.attempts++
	if !c.up {
		return nil, errDown
	}
	st, err := bolt.Open(filepath.Join(c.t.TempDir(), "store.db"))
	if err != nil {
		return nil, err
	}
	c.opened = &backend{Store: st}
	return c.opened, nil
}

// clock is a settable time for the retry interval.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

// calls invokes every method of store.Store once and returns their errors
// by name.
func calls(ctx context.Context, s store.Store) map[string]error {
	errs := map[string]error{}
	_, errs["Get"] = s.Get(ctx, "k")
	_, errs["List"] = s.List(ctx, "")
	_, errs["Put"] = s.Put(ctx, "k", []byte("v"), 0)
	_, errs["Create"] = s.Create(ctx, "c", []byte("v"), 0)
	_, errs["CompareAndSwap"] = s.CompareAndSwap(ctx, "k", []byte("w"), 1, 0)
	errs["Delete"] = s.Delete(ctx, "k")
	errs["CompareAndDelete"] = s.CompareAndDelete(ctx, "c", 1)
	_, errs["Txn"] = s.Txn(ctx, nil, []store.Op{store.Put("t", []byte("v"))})
	_, errs["Watch"] = s.Watch(ctx, "", 0)
	var id store.LeaseID
	id, errs["Grant"] = s.Grant(ctx, time.Minute)
	errs["KeepAlive"] = s.KeepAlive(ctx, id)
	errs["Revoke"] = s.Revoke(ctx, id)
	return errs
}

// Before the store is reachable every call fails at once with the
// connection error, tried at most once per lazyRetry; once it answers,
// calls pass through and it is not opened again.
func TestLazyStoreBeforeReachable(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	c := &connector{t: t}
	clk := &clock{now: time.Unix(1000, 0)}
	l := &lazyStore{open: c.open, now: clk.Now}
	defer l.Close()
	if c.attempts != 0 {
		t.Fatalf("created: %d connection attempts, want none before first use", c.attempts)
	}

	for name, err := range calls(ctx, l) {
		if !errors.Is(err, errDown) || !strings.Contains(err.Error(), "cluster store not connected") {
			t.Errorf("%s while down: err = %v, want %q wrapped as not connected", name, err, errDown)
		}
	}
	if c.attempts != 1 {
		t.Errorf("12 calls within %v: %d attempts, want 1", lazyRetry, c.attempts)
	}

	clk.now = clk.now.Add(lazyRetry - time.Nanosecond)
	if _, err := l.Get(ctx, "k"); !errors.Is(err, errDown) || c.attempts != 1 {
		t.Errorf("just before the retry interval: err = %v, attempts = %d, want the last error and no new attempt", err, c.attempts)
	}
	clk.now = clk.now.Add(time.Nanosecond)
	if _, err := l.Get(ctx, "k"); !errors.Is(err, errDown) || c.attempts != 2 {
		t.Errorf("after the retry interval, still down: err = %v, attempts = %d, want a second attempt", err, c.attempts)
	}

	c.up = true
	if _, err := l.Put(ctx, "k", []byte("v"), 0); !errors.Is(err, errDown) || c.attempts != 2 {
		t.Errorf("up, but within the retry interval: err = %v, attempts = %d, want the last error still", err, c.attempts)
	}
	clk.now = clk.now.Add(lazyRetry)
	if _, err := l.Put(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatalf("up, after the retry interval: Put: %v", err)
	}
	for name, err := range calls(ctx, l) {
		switch name {
		case "CompareAndSwap", "CompareAndDelete": // at revision 1, long gone: the backend's answer
			if !errors.Is(err, store.ErrConflict) {
				t.Errorf("%s when up: err = %v, want the backend's ErrConflict", name, err)
			}
		default:
			if err != nil {
				t.Errorf("%s when up: %v", name, err)
			}
		}
	}
	if kv, err := c.opened.Get(ctx, "t"); err != nil || string(kv.Value) != "v" {
		t.Errorf("the Txn through the wrapper is not in the backend: %+v, %v", kv, err)
	}
	clk.now = clk.now.Add(time.Hour)
	if _, err := l.List(ctx, ""); err != nil || c.attempts != 3 {
		t.Errorf("connected: err = %v, attempts = %d, want 3 (no reconnecting once connected)", err, c.attempts)
	}
}

// Close before any use connects nothing; calls after Close fail with
// store.ErrClosed and do not connect.
func TestLazyStoreClosedBeforeUse(t *testing.T) {
	c := &connector{t: t, up: true}
	l := &lazyStore{open: c.open}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for name, err := range calls(t.Context(), l) {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: err = %v, want store.ErrClosed", name, err)
		}
	}
	if c.attempts != 0 {
		t.Errorf("%d connection attempts after Close, want none", c.attempts)
	}
}

// Close after connecting closes the backend, once.
func TestLazyStoreCloseClosesBackend(t *testing.T) {
	c := &connector{t: t, up: true}
	l := &lazyStore{open: c.open}
	if _, err := l.Put(t.Context(), "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	if c.opened.closes != 1 {
		t.Errorf("backend closed %d times, want 1", c.opened.closes)
	}
	if _, err := l.Get(t.Context(), "k"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Get after Close: %v, want store.ErrClosed", err)
	}
}

// cutBackend is a backend that says whether it is connected.
type cutBackend struct {
	store.Store
	down bool
}

func (c *cutBackend) Connected() error {
	if c.down {
		return store.ErrUnreachable
	}
	return nil
}

// Connected says what the wrapper knows: nothing before the first call,
// the connection error while the store is unreachable, then the backend's
// own answer (through the metrics wrapper too, as the daemon stacks them).
func TestLazyStoreConnected(t *testing.T) {
	c := &connector{t: t}
	clk := &clock{now: time.Unix(0, 0)}
	l := &lazyStore{open: c.open, now: clk.Now}
	st := instrumentStore(l)
	if err := store.Connected(st); err != nil {
		t.Fatalf("before any call: %v, want nil (not known to be down)", err)
	}
	if _, err := st.Get(t.Context(), "k"); err == nil {
		t.Fatal("Get while down succeeded")
	}
	if err := store.Connected(st); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("while unreachable: %v, want the connection error", err)
	}
	var cut *cutBackend
	l.open = func(ctx context.Context) (store.Store, error) {
		b, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"))
		cut = &cutBackend{Store: b}
		return cut, err
	}
	clk.now = clk.now.Add(lazyRetry)
	if _, err := st.Get(t.Context(), "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get once reachable: %v", err)
	}
	if err := store.Connected(st); err != nil {
		t.Fatalf("connected: %v", err)
	}
	cut.down = true
	if err := store.Connected(st); !errors.Is(err, store.ErrUnreachable) {
		t.Fatalf("backend down: %v, want its ErrUnreachable", err)
	}
	_ = st.Close()
}
