package clustersim

import (
	"context"
	"fmt"
	"math"
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
			for i, ms := range tc.seenAt {
				tr.seen(i, "ep", at(ms))
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

func TestCountingStoreDeletes(t *testing.T) {
	raw, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var deleted []string
	s := &countingStore{Store: raw, n: &Counts{}, deleted: func(id string, _ time.Time) { deleted = append(deleted, id) }}
	ctx := context.Background()
	if _, err := s.Txn(ctx, nil, []store.Op{store.Put(endpointKeys+"net1/ep1", []byte("{}"))}); err != nil {
		t.Fatal(err)
	}
	// a failed Txn deletes nothing: not noted
	_, err = s.Txn(ctx, []store.Cmp{store.AtRevision(endpointKeys+"net1/ep1", 999)}, []store.Op{store.Delete(endpointKeys + "net1/ep1")})
	if err == nil {
		t.Fatal("Txn at a wrong revision succeeded")
	}
	if _, err := s.Txn(ctx, nil, []store.Op{store.Delete(endpointKeys + "net1/ep1"), store.Delete("tether/v1/global/addrs/net1/10.0.0.2")}); err != nil {
		t.Fatal(err)
	}
	if len(deleted) != 1 || deleted[0] != "ep1" {
		t.Errorf("endpoint deletions noted: %v, want [ep1]", deleted)
	}
}

// TestTrackerSeenTwice: an agent programming a changed record again is
// still one agent.
func TestTrackerSeenTwice(t *testing.T) {
	tr := NewTracker(2)
	t0 := time.Unix(1000, 0)
	tr.written("ep", t0)
	tr.seen(1, "ep", t0.Add(time.Millisecond))
	tr.seen(1, "ep", t0.Add(2*time.Millisecond))
	if tr.Complete("ep") || tr.Pending([]string{"ep"}, nil) != 1 {
		t.Fatal("complete after one agent programmed it twice; want 2 agents")
	}
	tr.seen(70, "ep", t0.Add(3*time.Millisecond)) // an index past the first word of the set
	if !tr.Complete("ep") {
		t.Fatal("not complete after two agents")
	}
}

func TestTrackerRemovals(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, tc := range []struct {
		name       string
		seenBy     []int // agents that programmed it before the delete
		flapped    []int // of those, agents that removed it before the withdrawal began
		back       []int // and programmed it again
		goneBy     []int
		want       []time.Duration
		incomplete int
		stray      int
	}{
		{name: "every agent removed it", seenBy: []int{0, 1, 2}, goneBy: []int{2, 0, 1}, want: []time.Duration{30 * time.Millisecond}},
		{name: "one agent still has it", seenBy: []int{0, 1, 2}, goneBy: []int{0, 1}, incomplete: 1},
		{name: "an agent that never had it owes nothing", seenBy: []int{0, 1}, goneBy: []int{0, 1}, want: []time.Duration{20 * time.Millisecond}},
		{name: "dropped before the withdrawal (its node lapsed): owes nothing", seenBy: []int{0, 1, 2}, flapped: []int{2}, goneBy: []int{0, 1},
			want: []time.Duration{20 * time.Millisecond}, stray: 1},
		{name: "dropped and programmed again: owes the removal", seenBy: []int{0, 1, 2}, flapped: []int{2}, back: []int{2}, goneBy: []int{0, 1},
			incomplete: 1, stray: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(3)
			tr.written("ep", at(0))
			for _, a := range tc.seenBy {
				tr.seen(a, "ep", at(1))
			}
			for _, a := range tc.flapped {
				tr.removed(a, "ep", at(2))
			}
			for _, a := range tc.back {
				tr.seen(a, "ep", at(3))
			}
			tr.withdrawing("ep", at(5))
			tr.deleted("ep", at(10))
			for i, a := range tc.goneBy {
				tr.removed(a, "ep", at(20+10*i))
			}
			got, inc := tr.RemovalConvergence([]string{"ep"})
			if inc != tc.incomplete || len(got) != len(tc.want) || (len(got) == 1 && got[0] != tc.want[0]) {
				t.Errorf("RemovalConvergence() = %v, %d incomplete; want %v, %d", got, inc, tc.want, tc.incomplete)
			}
			if p := tr.Pending(nil, []string{"ep"}); (p == 0) != (tc.incomplete == 0) {
				t.Errorf("Pending = %d with %d incomplete", p, tc.incomplete)
			}
			if tr.Stray() != tc.stray {
				t.Errorf("Stray() = %d, want %d (removals before the withdrawal)", tr.Stray(), tc.stray)
			}
		})
	}
}

// TestTrackerStray: a removal of an endpoint whose record was not deleted
// (its node's lease expired, or a spurious one) is counted.
func TestTrackerStray(t *testing.T) {
	tr := NewTracker(1)
	tr.written("ep", time.Unix(1000, 0))
	tr.seen(0, "ep", time.Unix(1001, 0))
	tr.removed(0, "ep", time.Unix(1002, 0))
	tr.removed(0, "unknown", time.Unix(1002, 0))
	if tr.Stray() != 2 {
		t.Errorf("Stray() = %d, want 2", tr.Stray())
	}
}

func TestTrackerLastBy(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tr := NewTracker(1)
	// a: attached before up (100), programmed at 150; b: attached after up,
	// programmed at 400; r: withdrawn before up, removed at 180
	tr.attaching("a", at(50))
	tr.written("a", at(120))
	tr.seen(0, "a", at(150))
	tr.attaching("b", at(200))
	tr.written("b", at(210))
	tr.seen(0, "b", at(400))
	tr.written("r", at(0))
	tr.seen(0, "r", at(1))
	tr.withdrawing("r", at(60))
	tr.deleted("r", at(130))
	tr.removed(0, "r", at(180))
	last, n, ok := tr.LastBy(at(100), []string{"a", "b"}, []string{"r"})
	if !ok || n != 2 || !last.Equal(at(180)) {
		t.Errorf("LastBy = %v, %d, %v; want %v, 2, true", last.Sub(t0), n, ok, 180*time.Millisecond)
	}
	tr.attaching("c", at(90)) // begun before up, never written
	if _, _, ok := tr.LastBy(at(100), []string{"a", "b", "c"}, []string{"r"}); ok {
		t.Error("LastBy ok with a change begun before t0 still pending")
	}
}

func TestTrackerNetworks(t *testing.T) {
	tr := NewTracker(2)
	t0 := time.Unix(1000, 0)
	tr.network(2, "n", t0.Add(2*time.Millisecond))
	tr.network(0, "n", t0)
	tr.network(2, "n", t0.Add(9*time.Millisecond)) // a change: not a second agent
	if got := tr.Networks("n"); got != 2 {
		t.Errorf("Networks = %d, want 2", got)
	}
	ts := tr.NetworkTimes("n")
	if len(ts) != 2 || !ts[0].Equal(t0) || !ts[1].Equal(t0.Add(2*time.Millisecond)) {
		t.Errorf("NetworkTimes = %v", ts)
	}
}

func TestChurnInterval(t *testing.T) {
	for _, tc := range []struct {
		total int
		pct   float64
		want  time.Duration
	}{
		{500, 1, 200 * time.Millisecond},
		{5000, 1, 20 * time.Millisecond},
		{2000, 1, 50 * time.Millisecond},
		{50, 1, 2 * time.Second},
		{0, 1, time.Second},
		{10_000_000, 1, time.Millisecond},
	} {
		if got := churnInterval(tc.total, tc.pct); got != tc.want {
			t.Errorf("churnInterval(%d, %v) = %v, want %v", tc.total, tc.pct, got, tc.want)
		}
	}
}

// TestPlanner: only settled endpoints are withdrawn, each once; no agent
// ever holds more than max; dead agents get nothing and lose nothing
// more; a successor goes to its victim's agent about half the time.
func TestPlanner(t *testing.T) {
	const agents, max = 5, 3
	p := NewPlanner(1, agents, max)
	owner := map[string]int{}
	for a := range agents {
		for j := range 2 {
			id := fmt.Sprintf("e%d-%d", a, j)
			p.Add(id, a)
			owner[id] = a
		}
	}
	if _, _, _, ok := p.Next(); ok {
		t.Fatal("Next picked an endpoint before any settled")
	}
	settled := func(id string) bool { return id != "e0-0" }
	p.Settle(settled)
	p.Kill(4)
	if p.Ready() != 7 {
		t.Fatalf("Ready = %d, want 7 (10, less e0-0 unsettled and agent 4's two)", p.Ready())
	}
	counts := []int{2, 2, 2, 2, 0}
	picked, same := map[string]bool{}, 0
	for i := range 400 {
		v, from, to, ok := p.Next()
		if !ok {
			t.Fatalf("round %d: nothing picked", i)
		}
		switch {
		case v == "e0-0":
			t.Fatal("picked an unsettled endpoint")
		case picked[v]:
			t.Fatalf("picked %s twice", v)
		case from != owner[v]:
			t.Fatalf("%s withdrawn from agent %d, it is on %d", v, from, owner[v])
		case to == 4:
			t.Fatal("successor placed on a dead agent")
		}
		picked[v] = true
		if to == from {
			same++
		}
		counts[from]--
		counts[to]++
		if counts[to] > max {
			t.Fatalf("agent %d holds %d endpoints, max %d", to, counts[to], max)
		}
		id := fmt.Sprintf("n%d", i)
		owner[id] = to
		p.Add(id, to)
		p.Unreserve(to)
		p.Settle(settled)
	}
	if same < 120 || same > 280 {
		t.Errorf("%d of 400 successors on the victim's agent, want about half", same)
	}
}

func TestExponent(t *testing.T) {
	for _, tc := range []struct {
		h1, h2 int
		v1, v2 float64
		want   float64
		ok     bool
		grows  string
	}{
		{50, 200, 10, 10, 0, true, "O(1)"},
		{50, 200, 10, 40, 1, true, "O(hosts)"},
		{50, 500, 1, 100, 2, true, "O(hosts × endpoints)"},
		{50, 200, 10, 20, 0.5, true, "sublinear (hosts^0.50)"},
		{50, 200, 0, 20, 0, false, ""},
		{50, 50, 1, 2, 0, false, ""},
	} {
		got, ok := Exponent(tc.h1, tc.h2, tc.v1, tc.v2)
		if ok != tc.ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Exponent(%d, %d, %v, %v) = %v, %v; want %v, %v", tc.h1, tc.h2, tc.v1, tc.v2, got, ok, tc.want, tc.ok)
		}
		if ok && Complexity(got) != tc.grows {
			t.Errorf("Complexity(%v) = %q, want %q", got, Complexity(got), tc.grows)
		}
	}
}

func TestSummarize(t *testing.T) {
	report := func(store string, hosts int, p99, writes float64) map[string]any {
		return map[string]any{"store_kind": store, "hosts": float64(hosts), "ok": true, "ttl_s": 3.0,
			"machine": map[string]any{"nproc": 2.0},
			"phases": map[string]any{"churn": map[string]any{
				"convergence_add": map[string]any{"p99_ms": p99, "p50_ms": float64(hosts-100) / 1000}, // negative at 50 hosts
				"per_change":      map[string]any{"store_writes": writes}}}}
	}
	var runs []Run
	for _, r := range []struct {
		store       string
		hosts       int
		p99, writes float64
	}{
		{"etcd", 200, 40, 2}, {"etcd", 50, 10, 2}, {"etcd", 500, 100, 2}, {"zk", 50, 5, 3},
	} {
		run, err := runOf(fmt.Sprintf("%s-%d.json", r.store, r.hosts), report(r.store, r.hosts, r.p99, r.writes))
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, run)
	}
	sum := Summarize(runs)
	etcd := sum["etcd"]
	if etcd.BaseHosts != 50 || len(etcd.Sizes) != 3 {
		t.Fatalf("etcd base %d sizes %v; want 50, [50 200 500]", etcd.BaseHosts, etcd.Sizes)
	}
	for _, skipped := range []string{"hosts", "ttl_s", "machine.nproc"} {
		if _, ok := etcd.Figures[skipped]; ok {
			t.Errorf("%s summarized as a figure", skipped)
		}
	}
	p99 := etcd.Figures["phases.churn.convergence_add.p99_ms"]
	if p99.RatioToBase["500"] != 10 || p99.RatioToBase["200"] != 4 || p99.Exponent["50-200"] != 1 || p99.GrowsAs != "O(hosts)" {
		t.Errorf("p99 growth %+v", p99)
	}
	if w := etcd.Figures["phases.churn.per_change.store_writes"]; w.GrowsAs != "O(1)" || w.RatioToBase["500"] != 1 {
		t.Errorf("writes growth %+v", w)
	}
	neg := etcd.Figures["phases.churn.convergence_add.p50_ms"]
	if _, ok := neg.Exponent["50-200"]; ok || len(neg.RatioToBase) != 0 || neg.GrowsAs != "" || neg.Exponent["200-500"] != 1.51 {
		t.Errorf("a negative base value: %+v; want no ratio, no growth from it, 1.51 from 200 to 500", neg)
	}
	if z := sum["zk"]; z.BaseHosts != 50 || len(z.Figures["phases.churn.convergence_add.p99_ms"].Exponent) != 0 {
		t.Errorf("zk summary %+v", z)
	}
	if _, err := runOf("x.json", map[string]any{"hosts": 3.0}); err == nil {
		t.Error("a report without store_kind accepted")
	}
}
