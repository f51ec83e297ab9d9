package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/store"
)

// nopListener is a watcher's listener that ignores everything (the tests
// below need only the watcher's feed of address and sticky keys).
type nopListener struct{}

func (nopListener) NetworkAdded(NetworkRecord)   {}
func (nopListener) NetworkRemoved(NetworkRecord) {}
func (nopListener) PeerAdded(EndpointRecord)     {}
func (nopListener) PeerRemoved(EndpointRecord)   {}

// watch runs a watcher for c until the test ends (it answers other nodes'
// claims in c's blocks).
func watch(t *testing.T, c *Cluster) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := NewWatcher(c, nopListener{})
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	<-w.Synced()
}

func blockNet(t *testing.T, c *Cluster, subnet string) NetworkRecord {
	t.Helper()
	n, err := c.CreateNetwork(context.Background(), NetworkRecord{ID: "n", Name: "ov", Subnet: netip.MustParsePrefix(subnet)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func take(c *Cluster, n NetworkRecord, ep string, static netip.Addr) (netip.Prefix, error) {
	return c.Allocator(nil).Take(context.Background(), TakeRequest{NetworkID: n.ID, Subnet: n.Subnet, Gateway: n.Gateway,
		EndpointID: ep, SandboxName: ep, Static: static})
}

func publish(t *testing.T, c *Cluster, n NetworkRecord, ep string, p netip.Prefix) EndpointRecord {
	t.Helper()
	rec := EndpointRecord{ID: ep, NetworkID: n.ID, SandboxID: "sb-" + ep, SandboxName: ep, Address: p, MAC: "02:42:0a:00:00:02"}
	al := c.Allocator(nil)
	al.Publish(rec)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := al.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return rec
}

// blocksOf maps the network's block keys to their nodes.
func blocksOf(t *testing.T, st store.Store, netID string) map[netip.Prefix]string {
	t.Helper()
	kvs, err := st.List(context.Background(), keyBlocks+netID+"/")
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Prefix]string{}
	for _, kv := range kvs {
		var b Block
		if err := json.Unmarshal(kv.Value, &b); err != nil {
			t.Fatal(err)
		}
		out[b.Prefix] = b.Node
	}
	return out
}

func TestBlockBits(t *testing.T) {
	for _, tt := range []struct {
		subnet string
		want   int
	}{{"10.0.0.0/16", 26}, {"10.0.0.0/24", 26}, {"10.0.0.0/25", 27}, {"10.0.0.0/28", 30}, {"10.0.0.0/29", 30}} {
		if got := blockBits(netip.MustParsePrefix(tt.subnet), DefaultBlockBits); got != tt.want {
			t.Errorf("blockBits(%s) = %d, want %d", tt.subnet, got, tt.want)
		}
	}
}

// Nodes attaching at once on a /24 (four /26 blocks): no address twice,
// each node's addresses in blocks the store says are its own, every
// record published; a node's concurrent attaches claim one block between
// them, not one each (three nodes, 15 each, fit in three blocks).
func TestBlocksConcurrentAttachesNeverCollide(t *testing.T) {
	for _, tt := range []struct {
		nodes, per, maxBlocks int
	}{{2, 40, 4}, {3, 15, 3}} {
		t.Run(fmt.Sprintf("%dx%d", tt.nodes, tt.per), func(t *testing.T) {
			concurrentAttaches(t, tt.nodes, tt.per, tt.maxBlocks)
		})
	}
}

// slowStore makes every transaction take a while, as a store over a
// network does: races between claimers show.
type slowStore struct {
	store.Store
	delay time.Duration
}

func (s slowStore) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	time.Sleep(s.delay)
	return s.Store.Txn(ctx, cmps, ops)
}

func concurrentAttaches(t *testing.T, nodes, per, maxBlocks int) {
	st := slowStore{sharedStore(t), 5 * time.Millisecond}
	var cs []*Cluster
	for i := range nodes {
		c := node(t, st, string(rune('a'+i)), 5*time.Second)
		watch(t, c)
		cs = append(cs, c)
	}
	n := blockNet(t, cs[0], "10.1.0.0/24")
	type got struct {
		node string
		p    netip.Prefix
	}
	var mu sync.Mutex
	var all []got
	var wg sync.WaitGroup
	for _, c := range cs {
		for i := range per {
			wg.Go(func() {
				ep := fmt.Sprintf("%s-%d", c.Self().ID, i)
				p, err := take(c, n, ep, netip.Addr{})
				if err != nil {
					t.Error(ep, err)
					return
				}
				c.Allocator(nil).Publish(EndpointRecord{ID: ep, NetworkID: n.ID, SandboxName: ep, Address: p, MAC: "02:42:0a:00:00:02"})
				mu.Lock()
				all = append(all, got{c.Self().ID, p})
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	for _, c := range cs {
		if err := c.Allocator(nil).Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[netip.Addr]string{}
	blocks := blocksOf(t, st, n.ID)
	for _, g := range all {
		if other, dup := seen[g.p.Addr()]; dup {
			t.Fatalf("%s given to %s and %s", g.p.Addr(), other, g.node)
		}
		seen[g.p.Addr()] = g.node
		if g.p.Addr() == n.Gateway {
			t.Errorf("the gateway %s was handed out", n.Gateway)
		}
		if owner := blocks[blockOf(n.Subnet, DefaultBlockBits, g.p.Addr())]; owner != g.node {
			t.Errorf("%s of node %s lies in a block of node %q", g.p.Addr(), g.node, owner)
		}
	}
	if len(blocks) > maxBlocks {
		t.Errorf("%d blocks claimed for %d nodes × %d: %v", len(blocks), nodes, per, blocks)
	}
	eps, err := cs[0].Endpoints(context.Background(), n.ID)
	if err != nil || len(eps) != nodes*per {
		t.Fatalf("%d records published (%v), want %d", len(eps), err, nodes*per)
	}
}

// A static address in another live node's block is asked of the owner:
// granted when free there (and the owner never hands it out), refused
// when the owner uses it, and refused when the owner does not answer.
func TestStaticAddressInAnotherNodesBlock(t *testing.T) {
	defer func(d time.Duration) { foreignWait = d }(foreignWait)
	foreignWait = 300 * time.Millisecond
	st := sharedStore(t)
	a, b := node(t, st, "a", 5*time.Second), node(t, st, "b", 5*time.Second)
	watch(t, a)
	n := blockNet(t, a, "10.2.0.0/24")
	pa, err := take(a, n, "a1", netip.Addr{}) // a holds 10.2.0.0/26
	if err != nil || pa.Addr().String() != "10.2.0.2" {
		t.Fatalf("a's first address %v %v", pa, err)
	}
	want := netip.MustParseAddr("10.2.0.3")
	pb, err := take(b, n, "b1", want)
	if err != nil || pb.Addr() != want {
		t.Fatalf("static %s in a's block: %v %v", want, pb, err)
	}
	publish(t, b, n, "b1", pb)
	if p, err := take(a, n, "a2", netip.Addr{}); err != nil || p.Addr() == want {
		t.Fatalf("a handed out %v (%v) after confirming %s to b", p, err, want)
	}
	if _, err := take(b, n, "b2", pa.Addr()); !errors.Is(err, ErrAddrInUse) || !errors.Is(err, ipam.ErrAddrInUse) {
		t.Errorf("static address a uses: %v, want in use", err)
	}
	// b's endpoint goes: a may hand the address out again
	if err := b.Allocator(nil).Withdraw(context.Background(), EndpointRecord{ID: "b1", NetworkID: n.ID, SandboxName: "b1", Address: pb}, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a frees "+want.String(), 2*time.Second, func() bool {
		p, err := take(a, n, "a3", want)
		return err == nil && p.Addr() == want
	})
	// an owner that does not answer (no watcher): refused, nothing left behind
	c := node(t, st, "c", 5*time.Second)
	if _, err := take(c, n, "c1", netip.MustParseAddr("10.2.0.70")); err != nil { // c holds 10.2.0.64/26
		t.Fatal(err)
	}
	if _, err := take(b, n, "b3", netip.MustParseAddr("10.2.0.71")); !errors.Is(err, ErrAddrInUse) || !strings.Contains(err.Error(), "did not confirm") {
		t.Errorf("static address in a silent node's block: %v", err)
	}
	if _, err := st.Get(context.Background(), addrKey(n.ID, netip.MustParseAddr("10.2.0.71"))); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the unconfirmed claim was left: %v", err)
	}
}

// A dead node's block is taken over only when its lease expired and no
// record lies in it; while it lives, its blocks are its own.
func TestDeadNodesEmptyBlocksAreReclaimed(t *testing.T) {
	defer func(d time.Duration) { foreignWait = d }(foreignWait)
	foreignWait = 100 * time.Millisecond
	st := sharedStore(t)
	const ttl = 600 * time.Millisecond
	a, b := node(t, st, "a", ttl), node(t, st, "b", 5*time.Second)
	n := blockNet(t, b, "10.3.0.0/28") // four /30 blocks
	var held []netip.Prefix
	for _, s := range []string{"10.3.0.2", "10.3.0.4", "10.3.0.8", "10.3.0.12"} {
		p, err := take(a, n, "a-"+s, netip.MustParseAddr(s))
		if err != nil {
			t.Fatal(s, err)
		}
		held = append(held, p)
	}
	publish(t, a, n, "a-10.3.0.2", held[0]) // the others were never published
	if _, err := take(b, n, "b1", netip.Addr{}); !errors.Is(err, ErrNoAddress) {
		t.Fatalf("attach while a holds every block: %v, want no address", err)
	}
	a.Stop()
	eventually(t, "a's lease expires", 5*ttl, func() bool {
		_, err := st.Get(context.Background(), keyNodes+"a")
		return errors.Is(err, store.ErrNotFound)
	})
	p, err := take(b, n, "b1", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if blockOf(n.Subnet, DefaultBlockBits, p.Addr()) == netip.MustParsePrefix("10.3.0.0/30") {
		t.Errorf("b got %s, in the dead node's block with a record", p)
	}
	if owner := blocksOf(t, st, n.ID)[blockOf(n.Subnet, DefaultBlockBits, p.Addr())]; owner != "b" {
		t.Errorf("the reclaimed block is %q's", owner)
	}
	// and a, whose lease is gone, hands out nothing from its old blocks:
	// it registers anew first, and its block with a record is still its own
	if p, err := take(a, n, "a-late", netip.Addr{}); err == nil && blocksOf(t, st, n.ID)[blockOf(n.Subnet, DefaultBlockBits, p.Addr())] != "a" {
		t.Errorf("a node whose lease expired handed out %s from a block it lost", p)
	}
}

// A daemon that restarts (a new Cluster value of the same node) keeps its
// blocks and the addresses its endpoints hold; its last endpoint's
// withdrawal gives the block back, and the network can then go.
func TestRestartKeepsBlocksAndAddresses(t *testing.T) {
	st := sharedStore(t)
	a := node(t, st, "a", 5*time.Second)
	n := blockNet(t, a, "10.4.0.0/24")
	p1, err := take(a, n, "web", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	publish(t, a, n, "web", p1)
	a.Stop()

	a2 := node(t, st, "a", 5*time.Second)
	a2.Allocator(func(string) []netip.Addr { return []netip.Addr{p1.Addr()} })
	p2, err := take(a2, n, "db", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if p2 == p1 {
		t.Fatalf("the restarted node handed out %s again", p1)
	}
	if got := blocksOf(t, st, n.ID); len(got) != 1 || got[netip.MustParsePrefix("10.4.0.0/26")] != "a" {
		t.Errorf("blocks after the restart %v, want a's one /26", got)
	}
	if err := a2.RemoveNetwork(context.Background(), n.ID); !errors.Is(err, ErrInUse) {
		t.Errorf("remove the network with a record: %v", err)
	}
	al := a2.Allocator(nil)
	for _, ep := range []EndpointRecord{{ID: "web", NetworkID: n.ID, SandboxName: "web", Address: p1}, {ID: "db", NetworkID: n.ID, SandboxName: "db", Address: p2}} {
		if err := al.Withdraw(context.Background(), ep, false); err != nil {
			t.Fatal(err)
		}
	}
	if got := blocksOf(t, st, n.ID); len(got) != 0 {
		t.Errorf("blocks after the last withdrawal %v, want none", got)
	}
	if err := a2.RemoveNetwork(context.Background(), n.ID); err != nil {
		t.Errorf("remove the network: %v", err)
	}
}

// The sandbox name's address comes back (sticky) and other names' sticky
// addresses are handed out last; a withdrawn endpoint is never published.
func TestBlockStickyAndWithdrawBeforePublish(t *testing.T) {
	st := sharedStore(t)
	a := node(t, st, "a", 5*time.Second)
	n := blockNet(t, a, "10.5.0.0/24")
	al := a.Allocator(nil)
	p1, _ := take(a, n, "web", netip.Addr{})
	web := publish(t, a, n, "web", p1)
	if err := al.Withdraw(context.Background(), web, false); err != nil {
		t.Fatal(err)
	}
	p2, _ := take(a, n, "other", netip.Addr{})
	if p2 == p1 {
		t.Errorf("another name got web's sticky %s", p1)
	}
	p3, err := take(a, n, "web", netip.Addr{})
	if err != nil || p3 != p1 {
		t.Errorf("web came back with %v (%v), want %s", p3, err, p1)
	}
	// withdrawn at once after the attach: no record is left
	rec := EndpointRecord{ID: "web", NetworkID: n.ID, SandboxName: "web", Address: p3, MAC: "02:42:0a:00:00:02"}
	al.Publish(rec)
	if err := al.Withdraw(context.Background(), rec, true); err != nil {
		t.Fatal(err)
	}
	_ = al.Flush(context.Background())
	eps, _ := a.Endpoints(context.Background(), n.ID)
	if slices.ContainsFunc(eps, func(e EndpointRecord) bool { return e.ID == "web" }) {
		t.Errorf("a withdrawn endpoint's record is in the store: %+v", eps)
	}
}

// An owner that restarts remembers the addresses of its blocks it
// confirmed to other nodes: it reads their claims before handing out.
func TestRestartKeepsConfirmedClaims(t *testing.T) {
	st := sharedStore(t)
	a, b := node(t, st, "a", 5*time.Second), node(t, st, "b", 5*time.Second)
	watch(t, a)
	n := blockNet(t, a, "10.6.0.0/24")
	if _, err := take(a, n, "a1", netip.Addr{}); err != nil { // a holds 10.6.0.0/26, gives .2
		t.Fatal(err)
	}
	x := netip.MustParseAddr("10.6.0.3")
	p, err := take(b, n, "b1", x)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, b, n, "b1", p)
	a.Stop()
	a2 := node(t, st, "a", 5*time.Second)
	a2.Allocator(func(string) []netip.Addr { return []netip.Addr{netip.MustParseAddr("10.6.0.2")} })
	for i := range 3 {
		got, err := take(a2, n, fmt.Sprint("a-", i), netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Addr() == x {
			t.Fatalf("the restarted owner handed out %s, confirmed to b", x)
		}
	}
}

// downStore refuses transactions while down is set, as an unreachable
// store does.
type downStore struct {
	store.Store
	down *atomic.Bool
}

var errStoreDown = errors.New("store unreachable: test store at 192.0.2.1:2379 is down")

func (s downStore) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	if s.down.Load() {
		return 0, errStoreDown
	}
	return s.Store.Txn(ctx, cmps, ops)
}

// A publication retries while the store is down, and gets the record
// written once the store is back.
func TestPublishRetriesWhileStoreDown(t *testing.T) {
	down := &atomic.Bool{}
	st := downStore{sharedStore(t), down}
	c := node(t, st, "a", 5*time.Second)
	watch(t, c)
	n := blockNet(t, c, "10.4.0.0/24")
	p, err := take(c, n, "e1", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	down.Store(true)
	al := c.Allocator(nil)
	al.Publish(EndpointRecord{ID: "e1", NetworkID: n.ID, SandboxID: "sb-e1", SandboxName: "e1", Address: p, MAC: "02:42:0a:04:00:02"})
	if al.Published("e1") == nil {
		t.Fatal("no publication in flight")
	}
	time.Sleep(300 * time.Millisecond) // a few attempts
	select {
	case <-al.Published("e1"):
		t.Fatal("published while the store is down")
	default:
	}
	down.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := al.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if kv, err := st.Get(ctx, endpointKey(n.ID, "e1")); err != nil || kv.Value == nil {
		t.Errorf("record not written after the store came back: %v", err)
	}
}
