package metrics

import (
	"context"
	"errors"
	"fmt"
	"github.com/tether-net/tether/internal/metrics/metricstest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/bolt"
)

// failing is a store whose calls fail with err (after the wrapped one ran).
type failing struct {
	store.Store
	err error
}

func (f failing) Get(ctx context.Context, key string) (store.KV, error) { return store.KV{}, f.err }

// gauges collects c: the value of each metric by name.
func gauges(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 10)
	c.Collect(ch)
	close(ch)
	out := map[string]float64{}
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		out[m.Desc().String()] = d.GetGauge().GetValue()
	}
	return map[string]float64{"up": out[StoreUpDesc.String()], "lag": out[WatchLagDesc.String()]}
}

func openBolt(t *testing.T) store.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestStoreReachability(t *testing.T) {
	for _, tc := range []struct {
		err    error
		up     float64
		errors float64 // counted in cluster_store_request_errors_total
	}{
		{nil, 1, 0},
		{store.ErrNotFound, 1, 0},
		{fmt.Errorf("get %q: %w", "k", store.ErrConflict), 1, 0},
		{context.Canceled, 1, 0},
		{store.ErrUnreachable, 0, 1},
		{context.DeadlineExceeded, 0, 1},
		{errors.New("cluster store not connected: dial tcp: connection refused"), 0, 1},
	} {
		s := InstrumentStore(failing{Store: openBolt(t), err: tc.err})
		e0 := metricstest.Counter(t, StoreErrors.WithLabelValues("get"))
		n0 := metricstest.HistCount(t, StoreSeconds.WithLabelValues("get"))
		_, _ = s.Get(context.Background(), "k")
		if got := gauges(t, s)["up"]; got != tc.up {
			t.Errorf("after %v: up = %v, want %v", tc.err, got, tc.up)
		}
		if got := metricstest.Counter(t, StoreErrors.WithLabelValues("get")) - e0; got != tc.errors {
			t.Errorf("after %v: errors counted %v, want %v", tc.err, got, tc.errors)
		}
		if got := metricstest.HistCount(t, StoreSeconds.WithLabelValues("get")) - n0; got != 1 {
			t.Errorf("after %v: round trips timed %d, want 1", tc.err, got)
		}
	}
}

func TestStoreWatchLag(t *testing.T) {
	now := time.Unix(1000, 0)
	s := InstrumentStore(openBolt(t))
	s.now = func() time.Time { return now }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A write no watch covers is not waited for.
	if _, err := s.Put(ctx, "other/x", []byte("1"), store.NoLease); err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(ctx, "a/", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := gauges(t, s)["lag"]; got != 0 {
		t.Fatalf("lag before any watched write = %v", got)
	}
	d0 := metricstest.HistCount(t, WatchDelaySeconds.WithLabelValues())
	// The watch relays events only as they are read: until then, the
	// write is pending and its lag grows with the clock.
	if _, err := s.Put(ctx, "a/x", []byte("1"), store.NoLease); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "other/y", []byte("1"), store.NoLease); err != nil {
		t.Fatal(err)
	}
	now = now.Add(3 * time.Second)
	s.mu.Lock()
	pending := len(s.pending)
	s.mu.Unlock()
	if pending > 1 {
		t.Fatalf("%d writes pending, want at most the watched one", pending)
	}
	select {
	case ev := <-ch:
		if ev.KV.Key != "a/x" {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event")
	}
	if got := gauges(t, s)["lag"]; got != 0 {
		t.Errorf("lag after the event = %v, want 0", got)
	}
	if got := metricstest.HistCount(t, WatchDelaySeconds.WithLabelValues()) - d0; got != 1 {
		t.Errorf("watch delays observed: %d, want 1", got)
	}
}

func TestStorePendingLagGrows(t *testing.T) {
	now := time.Unix(1000, 0)
	s := InstrumentStore(openBolt(t))
	s.now = func() time.Time { return now }
	wa, wb := &watchOf{prefix: "a/"}, &watchOf{prefix: "b/"}
	s.prefixes[wa], s.prefixes[wb] = struct{}{}, struct{}{} // watches that deliver only what the test says
	s.wrote(7, nil, "a/x")
	now = now.Add(5 * time.Second)
	if got := gauges(t, s)["lag"]; got != 5 {
		t.Errorf("lag = %v, want 5", got)
	}
	s.delivered(wa, 6) // an older revision settles nothing
	if got := gauges(t, s)["lag"]; got != 5 {
		t.Errorf("lag after revision 6 = %v, want 5", got)
	}
	s.delivered(wb, 9) // another prefix's watch neither
	if got := gauges(t, s)["lag"]; got != 5 {
		t.Errorf("lag after b/ revision 9 = %v, want 5", got)
	}
	s.delivered(wa, 7)
	if got := gauges(t, s)["lag"]; got != 0 {
		t.Errorf("lag after revision 7 = %v, want 0", got)
	}
	// A write whose event came before its answer is not left pending.
	d0 := metricstest.HistCount(t, WatchDelaySeconds.WithLabelValues())
	s.delivered(wa, 9)
	s.wrote(8, nil, "a/y")
	if got := gauges(t, s)["lag"]; got != 0 {
		t.Errorf("lag after a write already delivered = %v, want 0", got)
	}
	if got := metricstest.HistCount(t, WatchDelaySeconds.WithLabelValues()) - d0; got != 1 {
		t.Errorf("delays observed for a write already delivered: %d, want 1", got)
	}
}

func TestOffByEnv(t *testing.T) {
	for v, want := range map[string]bool{"": false, "1": false, "0": true, "false": true, "off": true, "no": true, "yes": false} {
		if got := OffByEnv(v); got != want {
			t.Errorf("OffByEnv(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestRegistryGathers(t *testing.T) {
	DNSSeconds.WithLabelValues("local").Observe(0.001)
	g, err := Gatherer(prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_test_extra"}))
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"tether_dns_query_duration_seconds", "tether_test_extra", "go_goroutines", "process_open_fds"} {
		if !names[n] {
			t.Errorf("%s not gathered", n)
		}
	}
}
