package engine

// Point-to-point links over a fake Linker: naming, address choice from
// link-pool, records, names, removal with a sandbox, restore (intact left
// alone, broken rebuilt, orphaned deleted) and bad input.

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/store"
)

// fakeLinker records links as the kernel would hold them.
type fakeLinker struct {
	mu      sync.Mutex
	links   map[string]driver.P2PLink
	broken  map[string]bool
	creates int
	deletes []string
	fail    error
}

func newFakeLinker() *fakeLinker {
	return &fakeLinker{links: map[string]driver.P2PLink{}, broken: map[string]bool{}}
}

func (f *fakeLinker) CreateLink(_ context.Context, l *driver.P2PLink) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.creates++
	f.links[l.ID] = *l
	delete(f.broken, l.ID)
	return nil
}

func (f *fakeLinker) DeleteLink(_ context.Context, l *driver.P2PLink) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes = append(f.deletes, l.ID)
	delete(f.links, l.ID)
	return nil
}

func (f *fakeLinker) LinkIntact(_ context.Context, l *driver.P2PLink) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.links[l.ID]
	return ok && !f.broken[l.ID], nil
}

func (f *fakeLinker) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.links[id]
	return ok
}

func withLinker(f *fakeLinker) rigOption { return func(r *rig) { r.linker = f } }

func (r *rig) bare(name string) *Sandbox {
	r.t.Helper()
	sb, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: name, Networks: []AttachSpec{{Network: "none"}}})
	if err != nil {
		r.t.Fatal(err)
	}
	return sb
}

func TestLinkCreate(t *testing.T) {
	fl := newFakeLinker()
	r := newRig(t, withLinker(fl))
	r.cfg.LinkPool = netip.MustParsePrefix("10.254.0.0/16")
	a, b, c := r.bare("a"), r.bare("b"), r.bare("c")
	l, err := r.e.CreateLink(r.ctx, LinkSpec{A: "a", B: "b", DNSName: true})
	if err != nil {
		t.Fatal(err)
	}
	if l.Name != "a-b" || l.A != a.ID || l.B != b.ID || l.IfA != "p2p0" || l.IfB != "p2p0" || l.MTU != 1500 ||
		l.AddrA.String() != "10.254.0.0/32" || l.AddrB.String() != "10.254.0.1/32" {
		t.Fatalf("link %+v", l)
	}
	k := fl.links[l.ID]
	if k.NSA != a.NetNS || k.NSB != b.NetNS || k.AddrA != l.AddrA || k.IfB != "p2p0" {
		t.Errorf("the linker was told %+v", k)
	}
	if _, err := r.st.Get(r.ctx, keyLinks+l.ID); err != nil {
		t.Errorf("link record: %v", err)
	}
	// Names over the link (DNSName): a finds b at b's end, and back.
	if as, ok := r.e.names.Lookup(a.ID, "b"); !ok || len(as) != 1 || as[0] != l.AddrB.Addr() {
		t.Errorf("a resolves b to %v %v, want %s", as, ok, l.AddrB.Addr())
	}
	if as, ok := r.e.names.Lookup(b.ID, "a.a-b"); !ok || len(as) != 1 || as[0] != l.AddrA.Addr() {
		t.Errorf("b resolves a.a-b to %v %v", as, ok)
	}
	if _, ok := r.e.names.Lookup(c.ID, "a"); ok {
		t.Error("c, on no link with a, resolves a")
	}
	// A second link of a: its own name, interface and /31.
	l2, err := r.e.CreateLink(r.ctx, LinkSpec{A: "c", B: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if l2.Name != "c-a" || l2.IfA != "p2p0" || l2.IfB != "p2p1" || l2.AddrA.String() != "10.254.0.2/32" {
		t.Errorf("second link %+v", l2)
	}
	l3, err := r.e.CreateLink(r.ctx, LinkSpec{A: "a", B: "b"})
	if err != nil || l3.Name != "a-b-2" {
		t.Errorf("third link %+v %v, want the name a-b-2", l3, err)
	}
	if got := r.e.Links(); len(got) != 3 {
		t.Errorf("Links() = %d links", len(got))
	}
	// Given addresses; a taken one; one in a network's subnet.
	if _, err := r.e.CreateLink(r.ctx, LinkSpec{Name: "given", A: "b", B: "c", IP: "192.0.2.10", PeerIP: "192.0.2.11"}); err != nil {
		t.Errorf("given addresses: %v", err)
	}
	_, err = r.e.CreateLink(r.ctx, LinkSpec{A: "b", B: "c", IP: "192.0.2.10", PeerIP: "192.0.2.12"})
	wantKind(t, err, KindConflict, "a taken address")
	r.network("n1", "bridge", "10.50.0.0/24")
	_, err = r.e.CreateLink(r.ctx, LinkSpec{A: "b", B: "c", IP: "10.50.0.9", PeerIP: "10.50.0.10"})
	wantKind(t, err, KindConflict, "an address of a network")
	_, err = r.e.CreateLink(r.ctx, LinkSpec{Name: "given", A: "b", B: "c"})
	wantKind(t, err, KindConflict, "a taken name")
}

func TestLinkPoolSkipsRoutesAndNetworks(t *testing.T) {
	fl := newFakeLinker()
	r := newRig(t, withLinker(fl))
	r.cfg.LinkPool = netip.MustParsePrefix("10.254.0.0/29")
	r.hostRoutes = append(r.hostRoutes, ipam.Blocker{Prefix: netip.MustParsePrefix("10.254.0.0/30"), Source: "route on vpn0"})
	r.restart()
	r.bare("a")
	r.bare("b")
	l, err := r.e.CreateLink(r.ctx, LinkSpec{A: "a", B: "b"})
	if err != nil || l.AddrA.String() != "10.254.0.4/32" {
		t.Fatalf("link %+v %v, want 10.254.0.4 (10.254.0.0/30 is routed)", l, err)
	}
	if _, err := r.e.CreateLink(r.ctx, LinkSpec{A: "a", B: "b"}); err != nil {
		t.Fatalf("second link: %v", err)
	}
	_, err = r.e.CreateLink(r.ctx, LinkSpec{A: "a", B: "b"})
	wantKind(t, err, KindForbidden, "a full link-pool")
}

func TestLinkGoesWithItsSandbox(t *testing.T) {
	fl := newFakeLinker()
	r := newRig(t, withLinker(fl))
	r.bare("a")
	b := r.bare("b")
	l, err := r.e.CreateLink(r.ctx, LinkSpec{A: "a", B: "b", DNSName: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.e.RemoveSandbox(r.ctx, "a", true); err != nil {
		t.Fatal(err)
	}
	if fl.has(l.ID) || !slices.Contains(fl.deletes, l.ID) {
		t.Errorf("the link's pair was not deleted with its sandbox: %v", fl.deletes)
	}
	if _, err := r.e.Link(l.ID); KindOf(err) != KindNotFound {
		t.Errorf("the link record outlived its sandbox: %v", err)
	}
	if _, err := r.st.Get(r.ctx, keyLinks+l.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the link's store record outlived its sandbox: %v", err)
	}
	if len(r.getSandbox(b.ID).Endpoints) != 1 {
		t.Error("b lost its endpoint")
	}
}

func TestLinkRemove(t *testing.T) {
	fl := newFakeLinker()
	r := newRig(t, withLinker(fl))
	a := r.bare("a")
	r.bare("b")
	l, err := r.e.CreateLink(r.ctx, LinkSpec{A: "a", B: "b", DNSName: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.e.RemoveLink(r.ctx, "a-b"); err != nil {
		t.Fatal(err)
	}
	if fl.has(l.ID) {
		t.Error("rm left the pair")
	}
	if _, ok := r.e.names.Lookup(a.ID, "b"); ok {
		t.Error("a still resolves b after the link went")
	}
	wantKind(t, r.e.RemoveLink(r.ctx, "a-b"), KindNotFound, "removing it twice")
}

func TestLinkRestore(t *testing.T) {
	fl := newFakeLinker()
	r := newRig(t, withLinker(fl))
	r.bare("a")
	r.bare("b")
	c := r.bare("c")
	intact, _ := r.e.CreateLink(r.ctx, LinkSpec{A: "a", B: "b", DNSName: true})
	broken, _ := r.e.CreateLink(r.ctx, LinkSpec{A: "b", B: "c"})
	orphan, _ := r.e.CreateLink(r.ctx, LinkSpec{A: "a", B: "c"})
	r.stop()
	fl.broken[broken.ID] = true
	// c's namespace dies while the daemon is down.
	if err := r.nsx.Delete(c.NetNS); err != nil {
		t.Fatal(err)
	}
	r.start()
	if fl.has(broken.ID) || fl.has(orphan.ID) {
		t.Error("the links of the dead sandbox c are still in the kernel")
	}
	if _, err := r.e.Link(intact.ID); err != nil {
		t.Errorf("the intact link is gone: %v", err)
	}
	for _, id := range []string{broken.ID, orphan.ID} {
		if _, err := r.e.Link(id); KindOf(err) != KindNotFound {
			t.Errorf("link %s of the dead sandbox c survived the restart: %v", id, err)
		}
	}
	if !fl.has(intact.ID) {
		t.Error("restore deleted the intact link")
	}
	a, _ := r.e.Sandbox("a")
	if as, ok := r.e.names.Lookup(a.ID, "b"); !ok || len(as) != 1 || as[0] != intact.AddrB.Addr() {
		t.Errorf("after the restart a resolves b to %v %v", as, ok)
	}
}

func TestLinkRepairOnRestore(t *testing.T) {
	fl := newFakeLinker()
	r := newRig(t, withLinker(fl))
	r.bare("a")
	r.bare("b")
	l, _ := r.e.CreateLink(r.ctx, LinkSpec{A: "a", B: "b"})
	r.stop()
	creates := fl.creates
	r.start()
	if fl.creates != creates {
		t.Errorf("an intact link was rebuilt on restore (%d -> %d creates)", creates, fl.creates)
	}
	r.stop()
	fl.broken[l.ID] = true
	r.start()
	if fl.creates != creates+1 || fl.broken[l.ID] {
		t.Errorf("a broken link was not rebuilt on restore (%d -> %d creates)", creates, fl.creates)
	}
}

func TestLinkBadInputChangesNothing(t *testing.T) {
	fl := newFakeLinker()
	r := newRig(t, withLinker(fl))
	r.bare("a")
	r.bare("b")
	hn, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "hn", Networks: []AttachSpec{{Network: "host"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		spec LinkSpec
		kind Kind
	}{
		{LinkSpec{A: "a", B: "a"}, KindInvalid},
		{LinkSpec{A: "a"}, KindInvalid},
		{LinkSpec{A: "a", B: "nosuch"}, KindNotFound},
		{LinkSpec{A: "a", B: "b", IP: "10.9.9.9"}, KindInvalid},
		{LinkSpec{A: "a", B: "b", IP: "10.9.9.9", PeerIP: "10.9.9.9"}, KindInvalid},
		{LinkSpec{A: "a", B: "b", IP: "fd00::1", PeerIP: "fd00::2"}, KindInvalid},
		{LinkSpec{A: "a", B: "b", IP: "127.0.0.1", PeerIP: "127.0.0.2"}, KindInvalid},
		{LinkSpec{A: "a", B: "b", MTU: 20}, KindInvalid},
		{LinkSpec{A: "a", B: "b", Name: "bad name"}, KindInvalid},
		{LinkSpec{A: "a", B: hn.Name}, KindForbidden},
	} {
		_, err := r.e.CreateLink(r.ctx, c.spec)
		wantKind(t, err, c.kind, "link "+c.spec.A+"-"+c.spec.B)
	}
	fl.fail = errors.New("kernel says no")
	if _, err := r.e.CreateLink(r.ctx, LinkSpec{A: "a", B: "b"}); err == nil {
		t.Error("a failing linker did not fail the create")
	}
	if len(r.e.Links()) != 0 || fl.creates != 0 {
		t.Errorf("refused links left %d records, %d kernel links", len(r.e.Links()), fl.creates)
	}
	if kvs, _ := r.st.List(r.ctx, keyLinks); len(kvs) != 0 {
		t.Errorf("refused links left %d store records", len(kvs))
	}
}
