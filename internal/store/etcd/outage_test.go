package etcd

import (
	"fmt"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/storetest"
)

// flavours are the etcd servers the process tests run against.
var flavours = []struct {
	name string
	get  func(testing.TB) flavour
}{{"etcd3.7", etcd37}, {"etcd3.4", etcd34}}

// The only member is SIGKILLed: every call fails within the request
// timeout saying the store is unreachable, and the watch stays open. It is
// started again on the same data dir: the same store works again by
// itself, its watch resumes after the last delivered revision (the changes
// made since, nothing twice), a new watch from that revision sees the same,
// and the lease granted before is still alive.
func TestOutage(t *testing.T) {
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) { testOutage(t, fl.get(t)) })
	}
}

func testOutage(t *testing.T, f flavour) {
	const timeout = time.Second
	c := startCluster(t, f, clusterOptions{size: 1})
	m := c.members[0]
	s := c.openStore(t, timeout)
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
	r1 := storetest.PutRev(t, s, "o/1")
	storetest.ExpectEvents(t, ch, fmt.Sprintf(`put "o/1"@%d`, r1))

	storetest.ExpectConnected(t, s, true, 0)
	m.kill()
	storetest.ExpectConnected(t, s, false, time.Second) // the connection drops with the server: no request timeout
	storetest.AssertUnreachable(t, s, timeout, lease)
	select {
	case ev, ok := <-ch:
		t.Fatalf("watch during the outage: %+v, open %v; want it quietly open", ev, ok)
	default:
	}

	// A few seconds more down: gRPC's default reconnect backoff would have
	// grown past them; ours is capped, so the store follows the server fast.
	time.Sleep(4 * time.Second)
	m.start()
	c.waitReady(m)
	back := storetest.WaitRecovered(t, s, 10*time.Second)
	storetest.ExpectConnected(t, s, true, time.Second)
	t.Logf("%s: the store answered again %v after the server was ready", f.name, back.Round(time.Millisecond))
	if limit := reconnectMax*6/5 + time.Second; back > limit {
		t.Errorf("the store answered %v after the server, want at most %v", back, limit)
	}
	r2 := storetest.PutRev(t, s, "o/2")
	r3, err := s.Txn(ctx, nil, []store.Op{store.Delete("o/1"), store.Put("o/3", []byte("v"))})
	if err != nil {
		t.Fatalf("Txn after the restart: %v", err)
	}
	want := []string{fmt.Sprintf(`put "o/2"@%d`, r2), fmt.Sprintf(`delete "o/1"@%d`, r3), fmt.Sprintf(`put "o/3"@%d`, r3)}
	storetest.ExpectEvents(t, ch, want...)
	resumed, err := s.Watch(ctx, "o/", r1)
	if err != nil {
		t.Fatalf("Watch after %d: %v", r1, err)
	}
	storetest.ExpectEvents(t, resumed, want...)
	storetest.ExpectQuiet(t, ch, resumed)
	if err := s.KeepAlive(ctx, lease); err != nil {
		t.Fatalf("KeepAlive of a lease granted before the outage: %v", err)
	}
	if kv, err := s.Get(ctx, "leased"); err != nil || kv.Lease != lease {
		t.Fatalf("leased key after the outage = %+v, %v", kv, err)
	}
}
