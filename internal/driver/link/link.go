// Package link builds point-to-point links between sandboxes (driver.Linker):
// a veth pair with one end in each sandbox's network namespace and no bridge,
// the kernel side of `tether link create A B`.
//
// Layout, per link:
//
//	(A) IfA  AddrA/32  up  route AddrB/32 dev IfA scope link   alias tether:LINK
//	(B) IfB  AddrB/32  up  route AddrA/32 dev IfB scope link   alias tether:LINK
//
// A /32 gives the kernel no prefix route, so each side gets a host route to
// the other end's address through its own end; ARP works across the pair
// because each side answers for its address and routes the asker's back.
// IPv6 is kept off both ends (bridge.IPv6Off): sandbox namespaces default to
// IPv6 off for new links, namespaces Tether adopted do not, and a link with
// IPv6 on would chatter (MLD, router solicitations) and take router
// advertisements from the other sandbox.
//
// The pair is created by one request sent from A's namespace with the peer
// placed directly in B's (IFLA_NET_NS_FD), so no end is ever seen in a third
// namespace. Both ends carry driver.LinkMarker(link ID) as their alias: a
// name taken by anything without that marker is another link's, and is
// refused (ErrNameInUse), never touched.
//
// Idempotence: CreateLink leaves an intact link untouched (no request that
// changes anything is sent). A link whose pair exists and is ours but lost
// an address, a route, its up state, its MTU or a marker is completed in
// place (the ends keep their indexes, traffic over the pair resumes without
// a rebuild). A link whose pair is not whole (an end missing, renamed, or
// peered elsewhere) is rebuilt: our ends that remain are deleted and a new
// pair is made.
package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/nlutil"
)

// DefaultMTU is the MTU of a link whose record gives none.
const DefaultMTU = 1500

var (
	// ErrNameInUse: an interface name the link needs is taken in its
	// namespace by a link that is not this one's (another link, or an
	// interface Tether did not make).
	ErrNameInUse = errors.New("interface name in use")
	// ErrNoNamespace: a sandbox's namespace is gone (its file missing or
	// no longer a namespace).
	ErrNoNamespace = errors.New("network namespace gone")
	// ErrInvalid: the link record is malformed (names, addresses, IDs).
	ErrInvalid = errors.New("invalid link")
)

// Linker implements driver.Linker with netlink handles bound to the
// sandboxes' namespaces. It holds no state: every call reads the kernel.
type Linker struct{}

// New returns a Linker.
func New() *Linker { return &Linker{} }

var _ driver.Linker = (*Linker)(nil)

// CreateLink makes the link, or completes or rebuilds it (see the package
// comment); an intact link is left as it is. Equivalent to
//
//	(A) ip link add IfA mtu M alias tether:ID type veth peer name IfB mtu M netns B
//	(A) ip link set IfA addrgenmode none; sysctl net.ipv6.conf.IfA.{accept_ra=0,disable_ipv6=1}
//	(A) ip addr replace AddrA/32 dev IfA; ip link set IfA up
//	(A) ip route replace AddrB/32 dev IfA scope link
//
// and the same in B with the roles swapped (plus its alias). A new pair is
// deleted again when a later step fails; a pair that existed is not.
func (k *Linker) CreateLink(ctx context.Context, l *driver.P2PLink) (err error) {
	if err := Validate(l); err != nil {
		return err
	}
	s, err := open(l)
	if err != nil {
		return err
	}
	defer s.close()
	a, b, err := s.read(l)
	if err != nil {
		return err
	}
	if Problem(l, a, b) == "" {
		return nil
	}
	if !paired(l, a, b) {
		if err := s.rebuild(l, a, b); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				_ = deleteEnd(s.a.h, l.IfA, driver.LinkMarker(l.ID))
			}
		}()
	}
	if err := s.a.configure(l.IfA, l.AddrA, l.AddrB.Addr(), l); err != nil {
		return err
	}
	if testHookBetweenEnds != nil {
		if err := testHookBetweenEnds(); err != nil {
			return err
		}
	}
	return s.b.configure(l.IfB, l.AddrB, l.AddrA.Addr(), l)
}

// testHookBetweenEnds, nil in production: fault injection after A's end
// is configured, before B's.
var testHookBetweenEnds func() error

// DeleteLink deletes the end in A (`ip -n A link del IfA`: the kernel
// deletes its peer with it), then the end in B if it is still there (A's
// namespace was gone, or the pair had been split). A namespace or an end
// that is gone is success; an interface of that name without the link's
// marker is not the link's and is left alone.
func (k *Linker) DeleteLink(ctx context.Context, l *driver.P2PLink) error {
	if l == nil || l.ID == "" {
		return fmt.Errorf("delete link: %w: no ID", ErrInvalid)
	}
	var errs []error
	for _, e := range []struct{ ns, name string }{{l.NSA, l.IfA}, {l.NSB, l.IfB}} {
		if e.ns == "" || e.name == "" {
			continue
		}
		if err := deleteIn(e.ns, e.name, driver.LinkMarker(l.ID)); err != nil {
			errs = append(errs, fmt.Errorf("delete link %.12s: %w", l.ID, err))
		}
	}
	return errors.Join(errs...)
}

// LinkIntact reports whether both ends exist, are each other's peer, carry
// the link's marker, are up with the link's MTU, and have their addresses
// and host routes. A namespace that is gone makes the link not intact (no
// error).
func (k *Linker) LinkIntact(ctx context.Context, l *driver.P2PLink) (bool, error) {
	if err := Validate(l); err != nil {
		return false, err
	}
	s, err := open(l)
	if errors.Is(err, ErrNoNamespace) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer s.close()
	a, b, err := s.read(l)
	if err != nil {
		return false, err
	}
	return Problem(l, a, b) == "", nil
}

// side is one sandbox's namespace, opened for a call: a netlink handle
// bound to it and a descriptor of it (to place a peer there, and to ask
// the other side which ID it gives this namespace).
type side struct {
	path string
	h    *netlink.Handle
	fd   netns.NsHandle
}

type session struct{ a, b *side }

// open opens both namespaces of the link. A missing one is ErrNoNamespace;
// the two being one namespace is ErrInvalid.
func open(l *driver.P2PLink) (*session, error) {
	ida, err := nsID(l.NSA)
	if err != nil {
		return nil, err
	}
	idb, err := nsID(l.NSB)
	if err != nil {
		return nil, err
	}
	if ida == idb {
		return nil, fmt.Errorf("link %.12s: %w: %q and %q are the same namespace", l.ID, ErrInvalid, l.NSA, l.NSB)
	}
	a, err := openSide(l.NSA)
	if err != nil {
		return nil, err
	}
	b, err := openSide(l.NSB)
	if err != nil {
		a.close()
		return nil, err
	}
	return &session{a: a, b: b}, nil
}

func nsID(path string) (tns.ID, error) {
	if !tns.IsNSFile(path) {
		return tns.ID{}, fmt.Errorf("namespace %q: %w", path, ErrNoNamespace)
	}
	return tns.IDOf(path)
}

func openSide(path string) (*side, error) {
	h, err := tns.NewHandle(path)
	if err != nil {
		return nil, gone(path, err)
	}
	fd, err := tns.Open(path)
	if err != nil {
		h.Close()
		return nil, gone(path, err)
	}
	return &side{path: path, h: h, fd: fd}, nil
}

// gone turns a failure to open a namespace that has meanwhile gone into
// ErrNoNamespace.
func gone(path string, err error) error {
	if !tns.IsNSFile(path) {
		return fmt.Errorf("namespace %q: %w", path, ErrNoNamespace)
	}
	return err
}

func (s *side) close() {
	s.h.Close()
	_ = s.fd.Close()
}

func (s *session) close() {
	s.a.close()
	s.b.close()
}

// read reads both ends of the link.
func (s *session) read(l *driver.P2PLink) (a, b End, err error) {
	if a, err = readEnd(s.a.h, l.IfA, s.b.fd); err != nil {
		return End{}, End{}, fmt.Errorf("link %.12s in %q: %w", l.ID, l.NSA, err)
	}
	if b, err = readEnd(s.b.h, l.IfB, s.a.fd); err != nil {
		return End{}, End{}, fmt.Errorf("link %.12s in %q: %w", l.ID, l.NSB, err)
	}
	return a, b, nil
}

// rebuild replaces a pair that is not whole: names taken by anything not
// this link's are refused, this link's remaining ends are deleted, and a
// new pair is created.
func (s *session) rebuild(l *driver.P2PLink, a, b End) error {
	marker := driver.LinkMarker(l.ID)
	for _, e := range []struct {
		end End
		ns  string
	}{{a, l.NSA}, {b, l.NSB}} {
		if e.end.Exists && e.end.Alias != marker {
			return fmt.Errorf("link %.12s: %w: namespace %q already has an interface %q, %s", l.ID, ErrNameInUse, e.ns, e.end.Name, owner(e.end.Alias))
		}
	}
	if err := deleteEnd(s.a.h, l.IfA, marker); err != nil {
		return fmt.Errorf("link %.12s: remove half of the old pair in %q: %w", l.ID, l.NSA, err)
	}
	if err := deleteEnd(s.b.h, l.IfB, marker); err != nil {
		return fmt.Errorf("link %.12s: remove half of the old pair in %q: %w", l.ID, l.NSB, err)
	}
	return s.createPair(l)
}

// owner describes whose an interface with that alias is, for errors.
func owner(alias string) string {
	if id, ok := strings.CutPrefix(alias, driver.MarkerPrefix); ok {
		return fmt.Sprintf("link %.12s's", id)
	}
	return "not made by Tether"
}

// createPair creates the veth from A's namespace with its peer placed
// directly in B's.
func (s *session) createPair(l *driver.P2PLink) error {
	mtu := mtuOf(l)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: l.IfA, MTU: mtu, Alias: driver.LinkMarker(l.ID)},
		PeerName:      l.IfB,
		PeerMTU:       uint32(mtu),
		PeerNamespace: netlink.NsFd(int(s.b.fd)),
	}
	if err := s.a.h.LinkAdd(veth); err != nil {
		return fmt.Errorf("link %.12s: create veth %s (in %q) / %s (in %q): %w", l.ID, l.IfA, l.NSA, l.IfB, l.NSB, err)
	}
	return nil
}

// configure brings one end to its recorded state: IPv6 off, MTU, marker,
// address, up, and the host route to the peer's address. Each step is
// idempotent (replace, or set only when different).
func (s *side) configure(name string, addr netip.Prefix, peer netip.Addr, l *driver.P2PLink) error {
	dev, err := s.h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %.12s: find %q in %q: %w", l.ID, name, s.path, err)
	}
	wrap := func(what string, err error) error {
		return fmt.Errorf("link %.12s: %s on %q in %q: %w", l.ID, what, name, s.path, err)
	}
	if err := bridge.IPv6Off(s.h, s.path, dev); err != nil {
		return wrap("IPv6 off", err)
	}
	if mtu := mtuOf(l); dev.Attrs().MTU != mtu {
		if err := s.h.LinkSetMTU(dev, mtu); err != nil {
			return wrap(fmt.Sprintf("MTU %d", mtu), err)
		}
	}
	if marker := driver.LinkMarker(l.ID); dev.Attrs().Alias != marker {
		if err := s.h.LinkSetAlias(dev, marker); err != nil {
			return wrap("alias", err)
		}
	}
	if err := s.h.AddrReplace(dev, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
		return wrap("address "+addr.String(), err)
	}
	if err := s.h.LinkSetUp(dev); err != nil {
		return wrap("bring up", err)
	}
	if err := s.h.RouteReplace(hostRoute(dev.Attrs().Index, peer)); err != nil {
		return wrap("route to "+peer.String(), err)
	}
	return nil
}

// hostRoute is `PEER/32 dev INDEX scope link` in the main table.
func hostRoute(index int, peer netip.Addr) *netlink.Route {
	return &netlink.Route{LinkIndex: index, Dst: ipNet(netip.PrefixFrom(peer, 32)), Scope: netlink.SCOPE_LINK}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

func mtuOf(l *driver.P2PLink) int {
	if l.MTU == 0 {
		return DefaultMTU
	}
	return l.MTU
}

// deleteIn deletes the end named name in the namespace at path if it
// carries marker. A namespace or link that is gone is success.
func deleteIn(path, name, marker string) error {
	if !tns.IsNSFile(path) {
		return nil
	}
	h, err := tns.NewHandle(path)
	if err != nil {
		if !tns.IsNSFile(path) {
			return nil
		}
		return err
	}
	defer h.Close()
	if err := deleteEnd(h, name, marker); err != nil {
		return fmt.Errorf("in %q: %w", path, err)
	}
	return nil
}

// deleteEnd deletes the link named name in h's namespace if it carries
// marker (`ip link del NAME`); gone, or not marked, is left as it is.
func deleteEnd(h *netlink.Handle, name, marker string) error {
	dev, err := h.LinkByName(name)
	if err != nil {
		if nlutil.IsLinkGone(err) {
			return nil
		}
		return fmt.Errorf("find %q: %w", name, err)
	}
	if dev.Attrs().Alias != marker {
		return nil
	}
	if err := h.LinkDel(dev); err != nil && !nlutil.IsLinkGone(err) {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	return nil
}
