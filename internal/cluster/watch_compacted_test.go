package cluster

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/store"
)

// cutStore lets a test end the watcher's watch (as a store restart or an
// overflow does) and answer its resumption with ErrCompacted (the history
// it asks for is gone), so the watcher must list everything again.
type cutStore struct {
	store.Store
	mu        sync.Mutex
	cut       chan struct{} // closed: the current watch ends
	compacted bool          // resumptions fail with ErrCompacted until a watch from now
	resumes   int
}

func (s *cutStore) Watch(ctx context.Context, prefix string, afterRev int64) (<-chan store.Event, error) {
	s.mu.Lock()
	if afterRev > 0 {
		s.resumes++
		if s.compacted { // the history asked for is gone, until a fresh watch
			s.mu.Unlock()
			return nil, store.ErrCompacted
		}
	} else {
		s.compacted = false
	}
	cut := make(chan struct{})
	s.cut = cut
	s.mu.Unlock()
	wctx, cancel := context.WithCancel(ctx)
	in, err := s.Store.Watch(wctx, prefix, afterRev)
	if err != nil {
		cancel()
		return nil, err
	}
	out := make(chan store.Event)
	go func() {
		defer close(out)
		defer cancel()
		for {
			select {
			case ev, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- ev:
				case <-cut:
					return
				}
			case <-cut:
				return
			}
		}
	}()
	return out, nil
}

// cutNow ends the current watch; the next resumption finds its history
// compacted.
func (s *cutStore) cutNow() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.compacted = true
	close(s.cut)
}

// A watcher whose watch ends and whose history is compacted meanwhile
// lists everything again: what changed while it was not watching reaches
// the listener (an endpoint withdrawn, another attached).
func TestWatcherResyncsAfterCompaction(t *testing.T) {
	st := sharedStore(t)
	const ttl = 5 * time.Second
	a := node(t, st, "a", ttl)
	cs := &cutStore{Store: st}
	b, err := New(Options{Store: cs, TTL: ttl, Self: Node{ID: "b", Name: "host-b", Addr: netip.MustParseAddr("198.18.0.99"), Port: 2376}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rb := newRecorder()
	wb := NewWatcher(b, rb)
	done := make(chan struct{})
	go func() { defer close(done); wb.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-wb.Synced()

	n, err := a.CreateNetwork(ctx, NetworkRecord{ID: "n", Name: "my-net", Subnet: netip.MustParsePrefix("10.0.0.0/24")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := attach(t, a, n.ID, "one")
	eventually(t, "b sees one", 2*time.Second, func() bool { _, peers := rb.state(); return len(peers) == 1 && peers[0] == "one" })

	cs.mu.Lock()
	before := cs.resumes
	cs.mu.Unlock()
	// While b is not watching: "one" goes, "two" comes. The watch is cut
	// first, then the store changes; b's resumption finds its history
	// compacted and lists everything.
	cs.cutNow()
	if err := a.RemoveEndpoint(ctx, first); err != nil {
		t.Fatal(err)
	}
	attach(t, a, n.ID, "two")
	eventually(t, "b sees two, not one", 2*time.Second, func() bool { _, peers := rb.state(); return len(peers) == 1 && peers[0] == "two" })
	cs.mu.Lock()
	resumed := cs.resumes - before
	cs.mu.Unlock()
	if resumed == 0 {
		t.Fatal("the watcher never tried to resume its watch: the test did not test a compaction")
	}
}
