// Package fastpath carries an overlay network's unicast frames between its
// sandboxes' veths and its VXLAN device without the Linux bridge between
// them: one small TCX program on the ingress of each host-side veth and of
// each VXLAN device looks up the frame's destination MAC and redirects the
// frame straight to where the bridge would have sent it.
//
// Why (docs/overlay.md, "Bridge bypass"): with br_netfilter (built into
// most kernels, on in every namespace) every frame bridged on tov-N also
// runs the IPv4/IPv6 netfilter hooks, conntrack and Tether's forward chain,
// whose first rule accepts it anyway (traffic that stays on its bridge).
// That pass, and the bridge itself, were the overlay's largest cost over
// the underlay (issue 19, row 3).
//
// What it redirects, per segment (one overlay network on this host, named
// by its VXLAN device's index):
//   - a frame from a sandbox to a remote endpoint's MAC: out of the VXLAN
//     device (bpf_redirect), whose FDB entry encapsulates it as before;
//   - a frame to a local sandbox's MAC, from the VXLAN device or from
//     another local sandbox: into that sandbox (bpf_redirect_peer, which
//     also skips the veth's backlog queue).
//
// Everything else, broadcast, multicast (ARP, neighbour discovery), frames
// to the gateway's MAC (the way out, routed and masqueraded by the host),
// and frames to unknown MACs, goes on to the bridge as before (TCX_NEXT).
// Only frames that the bridge would have delivered within the same network
// are redirected, and Tether's firewall accepts those unconditionally, so
// the firewall decides nothing differently.
//
// The links are held by the process: when the daemon stops they go, and
// traffic flows through the bridge again until it is back, so a daemon
// that is down or restarting drops nothing.
package fastpath

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/bpf"
	tns "github.com/tether-net/tether/internal/netns"
)

// Sizes of the two maps (entries are allocated as they are added).
const (
	maxEnds  = 1 << 16 // interfaces with the program: host ends and VXLAN devices
	maxDests = 1 << 18 // destination MACs over all segments: local sandboxes and remote endpoints
)

// __sk_buff offsets (include/uapi/linux/bpf.h).
const (
	skbIfindex = 40
	skbData    = 76
	skbDataEnd = 80
)

// ProgramName is the program's name as the kernel lists it (bpftool, and
// tether doctor's overlay_bypass check).
const ProgramName = "tether_fp"

const tcxNext = -1 // TCX_NEXT: the next program, or the stack (here: the bridge)

// Path is the bypass of one network namespace (the daemon's host
// namespace): the program, its two maps and the links that attach it.
type Path struct {
	ns string // namespace path of the interfaces; "": the current one

	mu    sync.Mutex
	prog  int
	ends  int                      // map: ifindex u32 -> segment u32
	dests int                      // map: {segment u32, MAC [6]byte, 0 u16} -> {ifindex u32, peer u32}
	links map[int]int              // ifindex -> link fd
	segs  map[int]map[[6]byte]bool // segment -> MACs with a dests entry
}

// New loads the program and creates its maps. nsPath is the namespace of
// the interfaces it will be attached to ("": the current one). It fails
// where the kernel lacks BPF, TCX (Linux 6.6) or bpf_redirect_peer, or the
// process the privilege; the caller then keeps the bridge path.
func New(nsPath string) (*Path, error) {
	p := &Path{ns: nsPath, prog: -1, ends: -1, dests: -1, links: map[int]int{}, segs: map[int]map[[6]byte]bool{}}
	var err error
	if p.ends, err = bpf.MapNewFlags(bpf.MapTypeHash, 4, 4, maxEnds, bpf.MapNoPrealloc, "tether_fp_ends"); err != nil {
		p.Close()
		return nil, err
	}
	if p.dests, err = bpf.MapNewFlags(bpf.MapTypeHash, 12, 8, maxDests, bpf.MapNoPrealloc, "tether_fp_dests"); err != nil {
		p.Close()
		return nil, err
	}
	if p.prog, err = bpf.ProgNew(bpf.ProgTypeSchedCls, 0, program(p.ends, p.dests), ProgramName); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// program is, in C:
//
//	struct dest { __u32 ifindex, peer; };
//	struct key { __u32 seg; __u8 mac[6]; __u16 pad; };
//	int fp(struct __sk_buff *skb) {
//		struct ethhdr *eth = (void *)(long)skb->data;
//		if ((void *)(eth + 1) > (void *)(long)skb->data_end) return TCX_NEXT;
//		__u32 *seg = bpf_map_lookup_elem(&ends, &skb->ifindex);
//		if (!seg) return TCX_NEXT;
//		struct key k = { .seg = *seg };
//		memcpy(k.mac, eth->h_source, 6);          // the sender must live where the frame came from
//		struct dest *d = bpf_map_lookup_elem(&dests, &k);
//		if (!d || d->ifindex != skb->ifindex) return TCX_NEXT;
//		memcpy(k.mac, eth->h_dest, 6);
//		d = bpf_map_lookup_elem(&dests, &k);
//		if (!d || d->ifindex == skb->ifindex) return TCX_NEXT;
//		return d->peer ? bpf_redirect_peer(d->ifindex, 0) : bpf_redirect(d->ifindex, 0);
//	}
//
// So only a frame between two known endpoints of one segment is
// redirected, and only when it arrives from the source's own interface (a
// local sandbox's host end, or the VXLAN device for a remote endpoint);
// anything else (a spoofed source, the host's own frames with the
// gateway's MAC) meets the bridge as before.
func program(ends, dests int) []bpf.Insn {
	const (
		ldxw = 0x61 // r_dst = *(u32 *)(r_src + off)
		ldxh = 0x69
		stxw = 0x63 // *(u32 *)(r_dst + off) = r_src
		stxh = 0x6b
		sth  = 0x6a // *(u16 *)(r_dst + off) = imm
		movr = 0xbf
		movi = 0xb7
		addi = 0x07
		jgtr = 0x2d
		jeqi = 0x15
		jeqr = 0x1d
		jner = 0x5d
		jnei = 0x55
		call = 0x85
		exit = 0x95
	)
	I := bpf.I
	var p []bpf.Insn
	jumps := map[int]string{} // instruction -> label it jumps to
	labels := map[string]int{}
	emit := func(is ...bpf.Insn) { p = append(p, is...) }
	jump := func(code, dst, src byte, imm int32, to string) {
		jumps[len(p)] = to
		emit(I(code, dst, src, 0, imm))
	}
	// checked loads data/data_end into r2/r3 and leaves if there is no
	// Ethernet header (after every helper call: the verifier forgets).
	checked := func() {
		emit(I(ldxw, 2, 6, skbData, 0), I(ldxw, 3, 6, skbDataEnd, 0), I(movr, 4, 2, 0, 0), I(addi, 4, 0, 0, 14))
		jump(jgtr, 4, 3, 0, "pass")
	}
	// lookup copies the MAC at data+off into the key and looks it up in dests.
	lookup := func(off int16) {
		checked()
		emit(I(ldxw, 4, 2, off, 0), I(stxw, 10, 4, -12, 0), I(ldxh, 4, 2, off+4, 0), I(stxh, 10, 4, -8, 0))
		emit(bpf.LdMap(1, dests)...)
		emit(I(movr, 2, 10, 0, 0), I(addi, 2, 0, 0, -16), I(call, 0, 0, 0, bpf.FnMapLookupElem))
		jump(jeqi, 0, 0, 0, "pass")
	}
	emit(I(movr, 6, 1, 0, 0)) // r6 = skb
	checked()
	emit(I(ldxw, 4, 6, skbIfindex, 0), I(stxw, 10, 4, -4, 0)) // the ends key
	emit(bpf.LdMap(1, ends)...)
	emit(I(movr, 2, 10, 0, 0), I(addi, 2, 0, 0, -4), I(call, 0, 0, 0, bpf.FnMapLookupElem))
	jump(jeqi, 0, 0, 0, "pass")                                             // not ours
	emit(I(ldxw, 4, 0, 0, 0), I(stxw, 10, 4, -16, 0), I(sth, 10, 0, -6, 0)) // key.seg, key.pad
	lookup(6)                                                               // source MAC
	emit(I(ldxw, 1, 0, 0, 0), I(ldxw, 4, 6, skbIfindex, 0))
	jump(jner, 1, 4, 0, "pass") // the source does not live there
	lookup(0)                   // destination MAC
	emit(I(ldxw, 1, 0, 0, 0), I(ldxw, 3, 0, 4, 0), I(ldxw, 4, 6, skbIfindex, 0))
	jump(jeqr, 1, 4, 0, "pass") // never back where it came from
	emit(I(movi, 2, 0, 0, 0))
	jump(jnei, 3, 0, 0, "peer")
	emit(I(call, 0, 0, 0, bpf.FnRedirect), I(exit, 0, 0, 0, 0))
	labels["peer"] = len(p)
	emit(I(call, 0, 0, 0, bpf.FnRedirectPeer), I(exit, 0, 0, 0, 0))
	labels["pass"] = len(p)
	emit(I(movi, 0, 0, 0, tcxNext), I(exit, 0, 0, 0, 0))
	for at, to := range jumps {
		p[at].Off = int16(labels[to] - at - 1)
	}
	return p
}

// Close detaches every link and frees the program and maps.
func (p *Path) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for idx, fd := range p.links {
		unix.Close(fd)
		delete(p.links, idx)
	}
	for _, fd := range []*int{&p.prog, &p.ends, &p.dests} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	return nil
}

func u32(v int) []byte {
	b := make([]byte, 4)
	bpf.NE.PutUint32(b, uint32(v))
	return b
}

func destKey(segment int, mac net.HardwareAddr) ([]byte, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("fast path: MAC %q is not an Ethernet address", mac)
	}
	k := make([]byte, 12)
	bpf.NE.PutUint32(k, uint32(segment))
	copy(k[4:], mac)
	return k, nil
}

// Attach puts ifindex (a host-side veth or a VXLAN device) in segment and
// attaches the program to its ingress. Attaching again replaces the link
// (an interface index may have been reused by a new interface).
func (p *Path) Attach(ifindex, segment int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.prog < 0 {
		return errors.New("fast path: closed")
	}
	if err := bpf.MapUpdate(p.ends, u32(ifindex), u32(segment)); err != nil {
		return fmt.Errorf("fast path: interface %d: %w", ifindex, err)
	}
	if fd, ok := p.links[ifindex]; ok {
		unix.Close(fd)
		delete(p.links, ifindex)
	}
	var fd int
	attach := func() error {
		var err error
		fd, err = bpf.LinkNew(p.prog, ifindex, bpf.AttachTCXIngress)
		return err
	}
	var err error
	if p.ns == "" {
		err = attach()
	} else {
		err = tns.Do(p.ns, attach)
	}
	if err != nil {
		_ = bpf.MapDelete(p.ends, u32(ifindex))
		return fmt.Errorf("fast path: attach to interface %d: %w", ifindex, err)
	}
	p.links[ifindex] = fd
	return nil
}

// Detach removes the program from ifindex and forgets its segment.
func (p *Path) Detach(ifindex int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if fd, ok := p.links[ifindex]; ok {
		unix.Close(fd)
		delete(p.links, ifindex)
	}
	if p.ends < 0 {
		return nil
	}
	if err := bpf.MapDelete(p.ends, u32(ifindex)); err != nil {
		return fmt.Errorf("fast path: forget interface %d: %w", ifindex, err)
	}
	return nil
}

// SetDest sends frames for mac in segment to ifindex: out of it (a VXLAN
// device; peer false) or into its veth peer (a sandbox; peer true).
func (p *Path) SetDest(segment int, mac net.HardwareAddr, ifindex int, peer bool) error {
	k, err := destKey(segment, mac)
	if err != nil {
		return err
	}
	v := make([]byte, 8)
	bpf.NE.PutUint32(v, uint32(ifindex))
	if peer {
		bpf.NE.PutUint32(v[4:], 1)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dests < 0 {
		return errors.New("fast path: closed")
	}
	if err := bpf.MapUpdate(p.dests, k, v); err != nil {
		return fmt.Errorf("fast path: destination %s: %w", mac, err)
	}
	if p.segs[segment] == nil {
		p.segs[segment] = map[[6]byte]bool{}
	}
	p.segs[segment][[6]byte(mac)] = true
	return nil
}

// DelDest forgets mac in segment: its frames go through the bridge.
func (p *Path) DelDest(segment int, mac net.HardwareAddr) error {
	k, err := destKey(segment, mac)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dests < 0 {
		return nil
	}
	if err := bpf.MapDelete(p.dests, k); err != nil {
		return fmt.Errorf("fast path: forget destination %s: %w", mac, err)
	}
	delete(p.segs[segment], [6]byte(mac))
	return nil
}

// DropSegment forgets every destination of segment (its network is gone
// from this host).
func (p *Path) DropSegment(segment int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for mac := range p.segs[segment] {
		k, _ := destKey(segment, mac[:])
		if p.dests >= 0 {
			if err := bpf.MapDelete(p.dests, k); err != nil {
				errs = append(errs, fmt.Errorf("fast path: forget destination %s: %w", net.HardwareAddr(mac[:]), err))
			}
		}
	}
	delete(p.segs, segment)
	return errors.Join(errs...)
}

// Dest reports where frames for mac in segment go (ok false: the bridge).
func (p *Path) Dest(segment int, mac net.HardwareAddr) (ifindex int, peer, ok bool, err error) {
	k, err := destKey(segment, mac)
	if err != nil {
		return 0, false, false, err
	}
	v := make([]byte, 8)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dests < 0 {
		return 0, false, false, errors.New("fast path: closed")
	}
	ok, err = bpf.MapLookup(p.dests, k, v)
	if !ok || err != nil {
		return 0, false, false, err
	}
	return int(bpf.NE.Uint32(v)), bpf.NE.Uint32(v[4:]) != 0, true, nil
}

// Attached reports whether the program is attached to ifindex by this Path.
func (p *Path) Attached(ifindex int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.links[ifindex]
	return ok
}
