package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/bolt"
)

// The store allocator runs against the bolt store, which passes the same
// conformance suite (internal/store/storetest) as etcd and ZooKeeper and
// needs no root.

const (
	tAddrs   = "t/addrs/"
	tSticky  = "t/sticky/"
	tNetwork = "t/network"
)

func boltStore(t *testing.T) store.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "ipam.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// storeNet is a network record in a store, as the cluster keeps one.
type storeNet struct {
	st      store.Store
	subnet  netip.Prefix
	gateway netip.Addr
}

func newStoreNet(t *testing.T, subnet, gateway string) *storeNet {
	t.Helper()
	n := &storeNet{st: boltStore(t), subnet: pfx(subnet), gateway: ip(gateway)}
	if _, err := n.st.Put(context.Background(), tNetwork, []byte("net"), store.NoLease); err != nil {
		t.Fatal(err)
	}
	return n
}

// network reads the record's revision as the guard.
func (n *storeNet) network(ctx context.Context) (Space, error) {
	kv, err := n.st.Get(ctx, tNetwork)
	if err != nil {
		return Space{}, fmt.Errorf("network: %w", err)
	}
	return Space{Name: "n", Subnet: n.subnet, Gateway: n.gateway, Guards: []store.Cmp{store.AtRevision(tNetwork, kv.Revision)}}, nil
}

// allocator is the allocator of requester name, which writes its sticky
// address in the claim's transaction, as the cluster does.
func (n *storeNet) allocator(name string) *StoreAllocator {
	return &StoreAllocator{
		Store:   n.st,
		Keys:    StoreKeys{Addrs: tAddrs, Stickies: tSticky, Sticky: tSticky + name},
		Claim:   []byte(name),
		Network: n.network,
		Ops: func(a netip.Addr) []store.Op {
			return []store.Op{store.Put(tSticky+name, []byte(a.String()))}
		},
	}
}

func (n *storeNet) put(t *testing.T, key, value string) {
	t.Helper()
	if _, err := n.st.Put(context.Background(), key, []byte(value), store.NoLease); err != nil {
		t.Fatal(err)
	}
}

func TestStoreAllocatorPolicy(t *testing.T) {
	// 10.0.0.0/29: .0 network, .1 gateway, .7 broadcast; .2-.6 usable.
	usable := []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}
	tests := []struct {
		name           string
		claimed        []string          // claim keys present
		stickies       map[string]string // other names' (and this name's) sticky keys
		static, sticky string            // Request
		want           string
		wantErr        error
	}{
		{name: "lowest first", want: "10.0.0.2"},
		{name: "lowest free", claimed: []string{"10.0.0.2", "10.0.0.3"}, want: "10.0.0.4"},
		{name: "static free", static: "10.0.0.5", want: "10.0.0.5"},
		{name: "static beats sticky", static: "10.0.0.5", sticky: "10.0.0.6", want: "10.0.0.5"},
		{name: "static taken", claimed: []string{"10.0.0.5"}, static: "10.0.0.5", wantErr: ErrAddrInUse},
		{name: "static gateway", static: "10.0.0.1", wantErr: ErrAddrInUse}, // as the local allocator answers
		{name: "static network address", static: "10.0.0.0", wantErr: errField},
		{name: "static broadcast", static: "10.0.0.7", wantErr: errField},
		{name: "static outside", static: "10.0.1.5", wantErr: errField},
		{name: "sticky in the request", sticky: "10.0.0.5", want: "10.0.0.5"},
		{name: "sticky read from its key", stickies: map[string]string{"me": "10.0.0.6"}, want: "10.0.0.6"},
		{name: "request's sticky wins over the key", sticky: "10.0.0.4", stickies: map[string]string{"me": "10.0.0.6"}, want: "10.0.0.4"},
		{name: "sticky taken: lowest", claimed: []string{"10.0.0.5"}, sticky: "10.0.0.5", want: "10.0.0.2"},
		{name: "sticky gateway: lowest", sticky: "10.0.0.1", want: "10.0.0.2"},
		{name: "sticky outside: lowest", sticky: "10.9.0.5", want: "10.0.0.2"},
		{name: "sticky key unparsable: lowest", stickies: map[string]string{"me": "junk"}, want: "10.0.0.2"},
		{name: "others' stickies last", stickies: map[string]string{"a": "10.0.0.2", "b": "10.0.0.3"}, want: "10.0.0.4"},
		{name: "others' stickies when nothing else is free", claimed: []string{"10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"},
			stickies: map[string]string{"a": "10.0.0.3"}, want: "10.0.0.3"},
		{name: "exhausted", claimed: usable, wantErr: ErrNoAddress},
		{name: "exhausted, sticky taken", claimed: usable, sticky: "10.0.0.4", wantErr: ErrNoAddress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newStoreNet(t, "10.0.0.0/29", "10.0.0.1")
			ctx := context.Background()
			for _, a := range tt.claimed {
				n.put(t, tAddrs+a, "other")
			}
			for name, a := range tt.stickies {
				n.put(t, tSticky+name, a)
			}
			var r Request
			if tt.static != "" {
				r.Static = ip(tt.static)
			}
			if tt.sticky != "" {
				r.Sticky = ip(tt.sticky)
			}
			before, _ := n.st.List(ctx, "t/")
			p, err := n.allocator("me").Reserve(ctx, r)
			if tt.wantErr != nil {
				after, _ := n.st.List(ctx, "t/")
				if !isClass(err, tt.wantErr) || p.IsValid() {
					t.Fatalf("Reserve(%+v) = %v, %v; want error %v", r, p, err, tt.wantErr)
				}
				if len(after) != len(before) {
					t.Errorf("a failed Reserve wrote: %d keys before, %d after", len(before), len(after))
				}
				return
			}
			if err != nil || p != netip.PrefixFrom(ip(tt.want), 29) {
				t.Fatalf("Reserve(%+v) = %v, %v; want %s/29", r, p, err, tt.want)
			}
			claim, err := n.st.Get(ctx, tAddrs+tt.want)
			if err != nil || string(claim.Value) != "me" {
				t.Fatalf("claim key of %s: %q, %v", tt.want, claim.Value, err)
			}
			// the caller's op went in the claim's transaction
			sticky, err := n.st.Get(ctx, tSticky+"me")
			if err != nil || string(sticky.Value) != tt.want || sticky.Revision != claim.Revision {
				t.Errorf("sticky key %q at revision %d, claim at %d (%v): want one transaction", sticky.Value, sticky.Revision, claim.Revision, err)
			}
		})
	}
}

// A claim transaction carries the caller's guards: when the guard moved,
// Reserve reads the network again and goes on with the fresh guard; when
// the network is gone, it stops with the network's error and writes
// nothing.
func TestStoreAllocatorGuards(t *testing.T) {
	ctx := context.Background()
	errGone := errors.New("network gone")
	for _, gone := range []bool{false, true} {
		t.Run(fmt.Sprint("gone=", gone), func(t *testing.T) {
			n := newStoreNet(t, "10.0.0.0/29", "10.0.0.1")
			al := n.allocator("me")
			calls := 0
			al.Network = func(ctx context.Context) (Space, error) {
				calls++
				sp, err := n.network(ctx)
				if calls == 1 { // the record changes after this read
					n.put(t, tNetwork, "changed")
				} else if gone {
					return Space{}, errGone
				}
				return sp, err
			}
			p, err := al.Reserve(ctx, Request{})
			claims, _ := n.st.List(ctx, tAddrs)
			if gone {
				if !errors.Is(err, errGone) || len(claims) != 0 {
					t.Errorf("Reserve = %v, %v with %d claims; want the network's error and none", p, err, len(claims))
				}
				return
			}
			if err != nil || calls != 2 || len(claims) != 1 || claims[0].Key != tAddrs+p.Addr().String() {
				t.Errorf("Reserve = %v, %v after %d reads, claims %v; want one claim after two reads", p, err, calls, claims)
			}
		})
	}
}

func TestStoreAllocatorRelease(t *testing.T) {
	n := newStoreNet(t, "10.0.0.0/29", "10.0.0.1")
	ctx := context.Background()
	al := n.allocator("me")
	var _ Allocator = al
	p, err := al.Reserve(ctx, Request{})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // releasing a free address is not an error
		if err := al.Release(ctx, p.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.st.Get(ctx, tAddrs+p.Addr().String()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("claim after release: %v", err)
	}
	// the sticky address stays: the same name gets its address back
	if p2, err := al.Reserve(ctx, Request{}); err != nil || p2 != p {
		t.Errorf("Reserve after release = %v, %v; want %v", p2, err, p)
	}
}

// Claimers racing on one network never share an address: as many win as
// there are addresses, the rest find the network full.
func TestStoreAllocatorConcurrentClaimers(t *testing.T) {
	for _, claimers := range []int{20, 80} {
		t.Run(fmt.Sprint(claimers, " claimers"), func(t *testing.T) {
			n := newStoreNet(t, "10.0.0.0/26", "10.0.0.1") // 61 usable
			ctx := context.Background()
			var wg sync.WaitGroup
			var mu sync.Mutex
			got := map[netip.Addr]string{}
			full := 0
			for i := range claimers {
				wg.Go(func() {
					name := fmt.Sprint("c", i)
					p, err := n.allocator(name).Reserve(ctx, Request{})
					mu.Lock()
					defer mu.Unlock()
					switch {
					case errors.Is(err, ErrNoAddress):
						full++
					case err != nil:
						t.Error(err)
					case got[p.Addr()] != "":
						t.Errorf("%s given to %s and %s", p.Addr(), got[p.Addr()], name)
					default:
						got[p.Addr()] = name
					}
				})
			}
			wg.Wait()
			want := min(claimers, 61)
			if len(got) != want || full != claimers-want {
				t.Errorf("%d addresses handed out, %d found the network full; want %d and %d", len(got), full, want, claimers-want)
			}
			for a, name := range got {
				if kv, err := n.st.Get(ctx, tAddrs+a.String()); err != nil || string(kv.Value) != name {
					t.Errorf("claim of %s: %q, %v; want %s", a, kv.Value, err, name)
				}
			}
			if got[n.gateway] != "" {
				t.Errorf("gateway handed out to %s", got[n.gateway])
			}
		})
	}
}

// faultStore fails the methods named in fail, and lists nothing under
// stale (a listing taken before racers claimed).
type faultStore struct {
	store.Store
	fail  map[string]bool
	stale string
}

var errBackend = errors.New("backend down")

func (f *faultStore) List(ctx context.Context, prefix string) ([]store.KV, error) {
	if f.fail["List"] {
		return nil, errBackend
	}
	if prefix == f.stale {
		return nil, nil
	}
	return f.Store.List(ctx, prefix)
}

func (f *faultStore) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	if f.fail["Txn"] {
		return 0, errBackend
	}
	return f.Store.Txn(ctx, cmps, ops)
}

func (f *faultStore) Delete(ctx context.Context, key string) error {
	if f.fail["Delete"] {
		return errBackend
	}
	return f.Store.Delete(ctx, key)
}

// A failing store is the caller's error, never taken for a full network
// or a taken address.
func TestStoreAllocatorBackendErrors(t *testing.T) {
	ctx := context.Background()
	for _, method := range []string{"List", "Txn", "Delete"} {
		t.Run(method, func(t *testing.T) {
			n := newStoreNet(t, "10.0.0.0/29", "10.0.0.1")
			al := n.allocator("me")
			al.Store = &faultStore{Store: n.st, fail: map[string]bool{method: true}}
			var err error
			if method == "Delete" {
				err = al.Release(ctx, ip("10.0.0.2"))
			} else {
				_, err = al.Reserve(ctx, Request{})
			}
			if !errors.Is(err, errBackend) || errors.Is(err, ErrNoAddress) || errors.Is(err, ErrAddrInUse) {
				t.Errorf("%s failing: %v; want the backend's error only", method, err)
			}
		})
	}
}

// Races lost against claims the listing did not show: the sticky address,
// then the lowest; each loss moves on, and the claim lands on a free one.
func TestStoreAllocatorLostRaces(t *testing.T) {
	ctx := context.Background()
	n := newStoreNet(t, "10.0.0.0/29", "10.0.0.1")
	n.put(t, tAddrs+"10.0.0.2", "racer")
	n.put(t, tAddrs+"10.0.0.3", "racer")
	al := n.allocator("me")
	al.Store = &faultStore{Store: n.st, stale: tAddrs}
	p, err := al.Reserve(ctx, Request{Sticky: ip("10.0.0.3")})
	if err != nil || p.Addr().Less(ip("10.0.0.4")) {
		t.Fatalf("Reserve = %v, %v; want one of .4-.6", p, err)
	}
	if kv, err := n.st.Get(ctx, tAddrs+"10.0.0.3"); err != nil || string(kv.Value) != "racer" {
		t.Errorf("the racer's claim was overwritten: %q, %v", kv.Value, err)
	}
}

// Only IPv4 subnets are served.
func TestStoreAllocatorRefusesIPv6(t *testing.T) {
	n := newStoreNet(t, "10.0.0.0/29", "10.0.0.1")
	n.subnet = pfx("fd00::/64")
	if _, err := n.allocator("me").Reserve(context.Background(), Request{}); err == nil || !strings.Contains(err.Error(), "only IPv4") {
		t.Errorf("Reserve on an IPv6 subnet: %v", err)
	}
}
