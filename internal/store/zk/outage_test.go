package zk

import (
	"fmt"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/storetest"
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
	r1 := storetest.PutRev(t, s, "o/1")
	storetest.ExpectEvents(t, ch, fmt.Sprintf(`put "o/1"@%d`, r1))

	storetest.ExpectConnected(t, s, true, 0)
	z.Stop()
	storetest.ExpectConnected(t, s, false, time.Second) // the connection drops with the server: no request timeout
	storetest.AssertUnreachable(t, s, timeout, lease)
	select {
	case ev, ok := <-ch:
		t.Fatalf("watch during the outage: %+v, open %v; want it quietly open", ev, ok)
	default:
	}

	time.Sleep(4 * time.Second)
	z.Start()
	back := storetest.WaitRecovered(t, s, 10*time.Second)
	storetest.ExpectConnected(t, s, true, time.Second)
	t.Logf("the store answered again %v after the server was ready", back.Round(time.Millisecond))
	if back > 3*time.Second { // the client retries every second
		t.Errorf("the store answered %v after the server, want at most 3s", back)
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
