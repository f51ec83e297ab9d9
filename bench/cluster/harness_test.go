package clustersim

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/bolt"
)

func TestTrackerConvergence(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, tc := range []struct {
		name       string
		seenAt     []int // ms after t0 at which agents programmed the endpoint
		written    int
		want       []time.Duration
		incomplete int
	}{
		{name: "every agent", seenAt: []int{3, 9, 5}, written: 1, want: []time.Duration{8 * time.Millisecond}},
		{name: "one agent missing", seenAt: []int{3, 9}, written: 1, incomplete: 1},
		{name: "seen before the write returned", seenAt: []int{1, 2, 2}, written: 4, want: []time.Duration{-2 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(3)
			tr.attaching("ep", t0)
			tr.written("ep", at(tc.written))
			for _, ms := range tc.seenAt {
				tr.seen("ep", at(ms))
			}
			got, _, incomplete := tr.Convergence()
			if incomplete != tc.incomplete || len(got) != len(tc.want) || (len(got) == 1 && got[0] != tc.want[0]) {
				t.Errorf("Convergence() = %v, %d incomplete; want %v, %d", got, incomplete, tc.want, tc.incomplete)
			}
			select {
			case <-tr.AllSeen():
				if tc.incomplete > 0 {
					t.Error("AllSeen closed with an endpoint not seen everywhere")
				}
			default:
				if tc.incomplete == 0 {
					t.Error("AllSeen not closed with every endpoint seen everywhere")
				}
			}
		})
	}
}

func TestCountingStore(t *testing.T) {
	raw, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	written := map[string]bool{}
	n := &Counts{}
	s := &countingStore{Store: raw, n: n, written: func(id string, _ time.Time) { written[id] = true }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Watch(ctx, "tether/", 0)
	if err != nil {
		t.Fatal(err)
	}
	ops := []store.Op{store.Put(endpointKeys+"net1/ep1", []byte("{}")), store.Put("tether/v1/global/addrs/net1/10.0.0.2", []byte("{}"))}
	if _, err := s.Txn(ctx, nil, ops); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "tether/x", []byte("1"), store.NoLease); err != nil {
		t.Fatal(err)
	}
	for range 3 { // the txn's two puts and the put
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal("watch event not relayed")
		}
	}
	got := n.Snapshot()
	want := CountsSnapshot{Writes: 2, Txns: 1, KeyWrites: 3, Watches: 1, WatchEvents: 3}
	if got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
	if len(written) != 1 || !written["ep1"] {
		t.Errorf("endpoint writes noted: %v, want ep1 only", written)
	}
}
