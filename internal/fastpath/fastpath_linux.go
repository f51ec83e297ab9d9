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
// The VXLAN tunnel (docs/overlay.md, "VXLAN in BPF"): for a remote
// endpoint whose entry names a Tunnel (an IPv4 underlay), an IPv4 frame is
// encapsulated by the program itself and sent out of the underlay
// interface (encap), and a second program on that interface takes VXLAN
// packets from the endpoint's own VTEP and puts the inner frame straight
// into the local sandbox (decapProgram). What they do not take goes on to
// the VXLAN device as before; the packets on the wire are the same.
//
// The links are held by the process: when the daemon stops they go, and
// traffic flows through the bridge again until it is back, so a daemon
// that is down or restarting drops nothing.
package fastpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
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

// ProgramName is the program's name as the kernel lists it (bpftool, and
// tether doctor's overlay_bypass check); DecapName is the underlay's.
const (
	ProgramName = "tether_fp"
	DecapName   = "tether_fp_vx"
)

// Path is the bypass of one network namespace (the daemon's host
// namespace): the programs, their two maps and the links that attach them.
type Path struct {
	ns   string // namespace path of the interfaces; "": the current one
	port int    // the VXLAN UDP port

	mu     sync.Mutex
	prog   int                      // on host ends and VXLAN devices
	decap  int                      // on underlay interfaces
	ends   int                      // map: ifindex u32 -> segment u32
	dests  int                      // map: {segment u32, MAC [6]byte, 0 u16} -> value (valIfindex...)
	links  map[int]int              // ifindex -> link fd (program)
	unders map[int]*underlay        // ifindex -> its decapsulation link
	segs   map[int]map[[6]byte]bool // segment -> MACs with a dests entry
}

// underlay is an underlay interface with the decapsulation program and
// the segments that use it.
type underlay struct {
	fd   int
	segs map[int]bool
}

// New loads the programs and creates their maps. nsPath is the namespace
// of the interfaces they will be attached to ("": the current one); port
// is the VXLAN UDP port. It fails where the kernel lacks BPF, TCX (Linux
// 6.6) or bpf_redirect_peer, or the process the privilege; the caller then
// keeps the bridge path.
func New(nsPath string, port int) (*Path, error) {
	if port <= 0 || port > 0xffff {
		return nil, fmt.Errorf("fast path: VXLAN port %d out of range", port)
	}
	p := &Path{ns: nsPath, port: port, prog: -1, decap: -1, ends: -1, dests: -1,
		links: map[int]int{}, unders: map[int]*underlay{}, segs: map[int]map[[6]byte]bool{}}
	var err error
	if p.ends, err = bpf.MapNewFlags(bpf.MapTypeHash, 4, 4, maxEnds, bpf.MapNoPrealloc, "tether_fp_ends"); err != nil {
		p.Close()
		return nil, err
	}
	if p.dests, err = bpf.MapNewFlags(bpf.MapTypeHash, 12, valueSize, maxDests, bpf.MapNoPrealloc, "tether_fp_dests"); err != nil {
		p.Close()
		return nil, err
	}
	if p.prog, err = bpf.ProgNew(bpf.ProgTypeSchedCls, 0, program(p.ends, p.dests, port), ProgramName); err != nil {
		p.Close()
		return nil, err
	}
	if p.decap, err = bpf.ProgNew(bpf.ProgTypeSchedCls, 0, decapProgram(p.dests, port), DecapName); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Layout of a dests value (valueSize bytes).
const (
	valIfindex = 0  // u32: where frames for the MAC go (a host end, or the VXLAN device)
	valPeer    = 4  // u32: 1 = into the veth's peer (a local sandbox)
	valUnder   = 8  // u32: underlay interface to encapsulate onto; 0 = leave it to the VXLAN device
	valRemote  = 12 // [4]byte: the remote VTEP (IPv4, network order)
	valLocal   = 16 // [4]byte: this host's VTEP
	valVNI     = 20 // [4]byte: the VXLAN header's second word (VNI << 8, network order)
	valCsum    = 24 // u32: sum of the outer IPv4 header's constant 16-bit words (see SetRemote)
	valueSize  = 28
)

// Outer headers the encapsulation writes: IPv4 20, UDP 8, VXLAN 8, inner Ethernet 14.
const (
	encapLen = 50
	// maxEncapLen is the longest frame (with its Ethernet header) whose
	// outer IPv4 total length still fits 16 bits.
	maxEncapLen = 0xffff + 14 - encapLen
	// BPF_F_ADJ_ROOM_FIXED_GSO | ENCAP_L3_IPV4 | ENCAP_L4_UDP | ENCAP_L2_ETH | ENCAP_L2(14):
	// the GSO size stays the inner segment's, and the kernel learns where
	// the inner frame starts (to segment and checksum it if the underlay
	// device cannot).
	encapFlags = 1<<0 | 1<<1 | 1<<4 | 1<<6 | 14<<56
	adjRoomMAC = 1 // BPF_ADJ_ROOM_MAC
	csumDec    = 2 // BPF_CSUM_LEVEL_DEC
)

// program is the host ends' and VXLAN devices' program. In C:
//
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
//		if (d->peer) return bpf_redirect_peer(d->ifindex, 0);
//		if (d->under && skb->protocol == htons(ETH_P_IP) && skb->len <= MAX_ENCAP_LEN)
//			return encap(skb, d);           // see encap
//		return bpf_redirect(d->ifindex, 0); // the VXLAN device encapsulates
//	}
//
// So only a frame between two known endpoints of one segment is
// redirected, and only when it arrives from the source's own interface (a
// local sandbox's host end, or the VXLAN device for a remote endpoint);
// anything else (a spoofed source, the host's own frames with the
// gateway's MAC) meets the bridge as before.
func program(ends, dests, port int) []bpf.Insn {
	a := newAsm()
	// checked loads data/data_end into r2/r3 and leaves if there is no
	// Ethernet header (after every helper call: the verifier forgets).
	checked := func() {
		a.i(ldxw, 2, 6, skbData, 0)
		a.i(ldxw, 3, 6, skbDataEnd, 0)
		a.i(movr, 4, 2, 0, 0)
		a.i(addi, 4, 0, 0, 14)
		a.jump(jgtr, 4, 3, 0, "pass")
	}
	// lookup copies the MAC at data+off into the key and looks it up in dests.
	lookup := func(off int16) {
		checked()
		a.lookupMAC(dests, 2, off)
	}
	a.i(movr, 6, 1, 0, 0) // r6 = skb
	checked()
	a.i(ldxw, 4, 6, skbIfindex, 0)
	a.i(stxw, 10, 4, -4, 0) // the ends key
	a.emit(bpf.LdMap(1, ends)...)
	a.i(movr, 2, 10, 0, 0)
	a.i(addi, 2, 0, 0, -4)
	a.i(call, 0, 0, 0, bpf.FnMapLookupElem)
	a.jump(jeqi, 0, 0, 0, "pass") // not ours
	a.i(ldxw, 4, 0, 0, 0)
	a.i(stxw, 10, 4, -16, 0) // key.seg
	a.i(sth, 10, 0, -6, 0)   // key.pad
	lookup(6)                // source MAC
	a.i(ldxw, 1, 0, valIfindex, 0)
	a.i(ldxw, 4, 6, skbIfindex, 0)
	a.jump(jner, 1, 4, 0, "pass") // the source does not live there
	lookup(0)                     // destination MAC
	a.i(ldxw, 1, 0, valIfindex, 0)
	a.i(ldxw, 3, 0, valPeer, 0)
	a.i(ldxw, 4, 6, skbIfindex, 0)
	a.jump(jeqr, 1, 4, 0, "pass") // never back where it came from
	a.i(movi, 2, 0, 0, 0)
	a.jump(jnei, 3, 0, 0, "peer")
	a.i(movr, 7, 0, 0, 0) // r7 = d (a map value survives helper calls)
	a.i(ldxw, 8, 7, valUnder, 0)
	a.jump(jeqi, 8, 0, 0, "device")
	a.i(ldxw, 4, 6, skbProtocol, 0)
	a.jump(jnei, 4, 0, be16(0x0800), "device")
	a.i(ldxw, 4, 6, skbLen, 0)
	a.jump(jgti, 4, 0, maxEncapLen, "device")
	encap(a, port)
	a.label("device")
	a.i(ldxw, 1, 7, valIfindex, 0)
	a.i(movi, 2, 0, 0, 0)
	a.i(call, 0, 0, 0, bpf.FnRedirect)
	a.i(exit, 0, 0, 0, 0)
	a.label("peer")
	a.i(call, 0, 0, 0, bpf.FnRedirectPeer)
	a.i(exit, 0, 0, 0, 0)
	a.label("shot")
	a.ret(tcShot)
	a.label("pass")
	a.ret(tcxNext)
	return a.done()
}

// encap is the program's VXLAN encapsulation of an IPv4 frame for a
// remote endpoint (r6 = skb, r7 = its dests value, r8 = the underlay's
// index), done here instead of by the VXLAN device: the frame skips the
// device, the host's routing of the outer packet, its netfilter hooks and
// conntrack. In C:
//
//	struct { struct iphdr ip; struct udphdr udp; struct vxlanhdr vx; struct ethhdr inner; } h;
//	if (bpf_skb_load_bytes(skb, 0, &h.inner, 16)) goto device; // and the inner TOS
//	h.udp.source = htons(0xc000 | (bpf_get_hash_recalc(skb) & 0x3fff)); // flow entropy, RFC 7348
//	if (bpf_skb_adjust_room(skb, 50, BPF_ADJ_ROOM_MAC, ENCAP_FLAGS)) goto device;
//	__u32 len = skb->len - 14;
//	h.ip = (struct iphdr){ .version = 4, .ihl = 5, .tos = inner_tos & 3, .tot_len = htons(len),
//		.id = bpf_get_prandom_u32(), .ttl = 64, .protocol = IPPROTO_UDP,
//		.saddr = d->local, .daddr = d->remote, .check = fold(d->csum + len + id + ecn) };
//	h.udp.dest = htons(PORT); h.udp.len = htons(len - 20); h.udp.check = 0;
//	h.vx.flags = 0x08000000 (network order); h.vx.vni = d->vni;
//	if (bpf_skb_store_bytes(skb, 14, &h, 50, 0)) return TC_ACT_SHOT;
//	return bpf_redirect_neigh(d->under, NULL, 0, 0); // route, neighbour, outer Ethernet header
//
// The outer Ethernet header is the frame's own until bpf_redirect_neigh
// replaces it with the route's next hop (resolving it with ARP, as the
// VXLAN device would).
func encap(a *asm, port int) {
	// The 50 header bytes at fp-80 (8-aligned), then the inner IPv4
	// header's first two bytes (for its ECN field).
	const buf = -80
	a.i(movr, 1, 6, 0, 0)
	a.i(movi, 2, 0, 0, 0)
	a.i(movr, 3, 10, 0, 0)
	a.i(addi, 3, 0, 0, buf+36)
	a.i(movi, 4, 0, 0, 16)
	a.i(call, 0, 0, 0, fnSkbLoadBytes)
	a.jump(jnei, 0, 0, 0, "device")
	a.i(movr, 1, 6, 0, 0)
	a.i(call, 0, 0, 0, fnGetHashRecalc)
	a.i(andi, 0, 0, 0, 0x3fff)
	a.i(ori, 0, 0, 0, 0xc000)
	a.i(tobe, 0, 0, 0, 16)
	a.i(stxh, 10, 0, buf+20, 0)
	a.i(call, 0, 0, 0, fnPrandom) // the outer IP ID (DF is not set, as the device's)
	a.i(andi, 0, 0, 0, 0xffff)
	a.i(movr, 9, 0, 0, 0) // r9: the header words the checksum base lacks
	a.i(tobe, 0, 0, 0, 16)
	a.i(stxh, 10, 0, buf+4, 0)
	a.i(ldxb, 3, 10, buf+51, 0) // the inner TOS: its ECN bits go outside (RFC 6040, as the device)
	a.i(andi, 3, 0, 0, 3)
	a.i(addr, 9, 3, 0, 0)
	a.i(sth, 10, 0, buf+0, be16(0x4500))
	a.i(stxb, 10, 3, buf+1, 0)
	a.i(movr, 1, 6, 0, 0)
	a.i(movi, 2, 0, 0, encapLen)
	a.i(movi, 3, 0, 0, adjRoomMAC)
	a.ld64(4, encapFlags)
	a.i(call, 0, 0, 0, fnSkbAdjustRoom)
	a.jump(jnei, 0, 0, 0, "device") // refused before changing anything
	a.i(ldxw, 1, 6, skbLen, 0)
	a.i(subi, 1, 0, 0, 14) // r1 = outer tot_len
	a.i(movr, 3, 1, 0, 0)
	a.i(tobe, 3, 0, 0, 16)
	a.i(stxh, 10, 3, buf+2, 0)
	a.i(movr, 3, 1, 0, 0)
	a.i(subi, 3, 0, 0, 20)
	a.i(tobe, 3, 0, 0, 16)
	a.i(stxh, 10, 3, buf+24, 0) // UDP length
	a.i(ldxw, 3, 7, valCsum, 0)
	a.i(addr, 3, 1, 0, 0)
	a.i(addr, 3, 9, 0, 0)
	a.fold(3, 4)
	a.i(xori, 3, 0, 0, 0xffff)
	a.i(tobe, 3, 0, 0, 16)
	a.i(stxh, 10, 3, buf+10, 0)
	a.i(sth, 10, 0, buf+6, 0) // no DF, no fragment
	a.i(sth, 10, 0, buf+8, be16(64<<8|17))
	a.i(ldxw, 3, 7, valLocal, 0)
	a.i(stxw, 10, 3, buf+12, 0)
	a.i(ldxw, 3, 7, valRemote, 0)
	a.i(stxw, 10, 3, buf+16, 0)
	a.i(sth, 10, 0, buf+22, be16(uint16(port)))
	a.i(sth, 10, 0, buf+26, 0)
	a.i(stw, 10, 0, buf+28, be32(0x08000000))
	a.i(ldxw, 3, 7, valVNI, 0)
	a.i(stxw, 10, 3, buf+32, 0)
	a.i(movr, 1, 6, 0, 0)
	a.i(movi, 2, 0, 0, 14)
	a.i(movr, 3, 10, 0, 0)
	a.i(addi, 3, 0, 0, buf)
	a.i(movi, 4, 0, 0, encapLen)
	a.i(movi, 5, 0, 0, 0)
	a.i(call, 0, 0, 0, fnSkbStoreBytes)
	a.jump(jnei, 0, 0, 0, "shot")
	a.i(movr, 1, 8, 0, 0)
	a.i(movi, 2, 0, 0, 0)
	a.i(movi, 3, 0, 0, 0)
	a.i(movi, 4, 0, 0, 0)
	a.i(call, 0, 0, 0, fnRedirectNeigh)
	a.i(exit, 0, 0, 0, 0)
}

// decapProgram is the underlay interface's program: a VXLAN packet from a
// known remote endpoint to a local sandbox is decapsulated here and put
// straight into the sandbox, skipping the host's IP and UDP receive, its
// netfilter hooks and conntrack, the VXLAN device and its GRO cell queue.
// In C:
//
//	int vx(struct __sk_buff *skb) {
//		if (skb->protocol != htons(ETH_P_IP) || skb->pkt_type != PACKET_HOST) return TCX_NEXT;
//		if (data + 64 > data_end && (bpf_skb_pull_data(skb, 64) || data + 64 > data_end)) return TCX_NEXT;
//		struct { struct ethhdr eth; struct iphdr ip; struct udphdr udp; struct vxlanhdr vx; struct ethhdr inner; } *p = data;
//		if (p->ip.version != 4 || p->ip.ihl != 5 || (p->ip.tos & 3) == INET_ECN_CE ||
//		    p->ip.frag_off & htons(IP_MF|IP_OFFSET) ||
//		    p->ip.protocol != IPPROTO_UDP || ntohs(p->ip.tot_len) != skb->len - 14 ||
//		    fold(csum_diff(NULL, 0, &p->ip, 20, 0)) != 0xffff ||
//		    p->udp.dest != htons(PORT) || p->vx.flags != 0x08 (just I) ||
//		    p->inner.h_proto != htons(ETH_P_IP)) return TCX_NEXT;
//		struct key k = { .seg = vni(p->vx) };
//		memcpy(k.mac, p->inner.h_source, 6);     // a remote endpoint, behind this very VTEP, to us
//		struct dest *s = bpf_map_lookup_elem(&dests, &k);
//		if (!s || s->peer || s->remote != p->ip.saddr || s->local != p->ip.daddr) return TCX_NEXT;
//		memcpy(k.mac, p->inner.h_dest, 6);       // a local sandbox of the same network
//		struct dest *d = bpf_map_lookup_elem(&dests, &k);
//		if (!d || !d->peer) return TCX_NEXT;
//		if (bpf_skb_adjust_room(skb, -50, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO)) return TCX_NEXT;
//		bpf_skb_store_bytes(skb, 0, inner_macs, 12, 0); // the inner frame's addresses
//		bpf_csum_level(skb, BPF_CSUM_LEVEL_DEC);         // as the UDP receive would
//		return bpf_redirect_peer(d->ifindex, 0);
//	}
//
// Anything else (ARP, IPv6 inside, unknown or spoofed senders, other
// ports) goes on to the host's stack, its firewall (the VXLAN guard) and
// the VXLAN device, as before.
func decapProgram(dests, port int) []bpf.Insn {
	const hdr = 14 + encapLen // outer Ethernet + the 50 bytes decapsulation removes
	const macs = -32          // the inner frame's 12 address bytes at fp-32
	const smac = -48          // its source MAC alone, aligned for the key's loads
	a := newAsm()
	load := func() { // r2 = data, r3 = data_end; 64 bytes there or "pull"
		a.i(ldxw, 2, 6, skbData, 0)
		a.i(ldxw, 3, 6, skbDataEnd, 0)
		a.i(movr, 4, 2, 0, 0)
		a.i(addi, 4, 0, 0, hdr)
	}
	a.i(movr, 6, 1, 0, 0)
	a.i(ldxw, 4, 6, skbProtocol, 0)
	a.jump(jnei, 4, 0, be16(0x0800), "pass")
	a.i(ldxw, 4, 6, 4, 0) // pkt_type
	a.jump(jnei, 4, 0, 0, "pass")
	load()
	a.jump(jgtr, 4, 3, 0, "pull")
	a.label("parse")
	a.i(ldxb, 4, 2, 14, 0)
	a.jump(jnei, 4, 0, 0x45, "pass")
	a.i(ldxb, 4, 2, 15, 0)
	a.i(andi, 4, 0, 0, 3)
	a.jump(jeqi, 4, 0, 3, "pass") // congestion experienced: the device copies it inside (RFC 6040)
	a.i(ldxh, 4, 2, 20, 0)
	a.i(andi, 4, 0, 0, be16(0x3fff))
	a.jump(jnei, 4, 0, 0, "pass") // a fragment
	a.i(ldxb, 4, 2, 23, 0)
	a.jump(jnei, 4, 0, 17, "pass")
	a.i(ldxh, 4, 2, 16, 0)
	a.i(tobe, 4, 0, 0, 16)
	a.i(ldxw, 5, 6, skbLen, 0)
	a.i(subi, 5, 0, 0, 14)
	a.jump(jner, 4, 5, 0, "pass") // padded or truncated
	a.i(ldxh, 4, 2, 36, 0)
	a.jump(jnei, 4, 0, be16(uint16(port)), "pass")
	a.i(ldxb, 4, 2, 42, 0)
	a.jump(jnei, 4, 0, 0x08, "pass")
	a.i(ldxh, 4, 2, 62, 0)
	a.jump(jnei, 4, 0, be16(0x0800), "pass")
	a.i(ldxb, 4, 2, 46, 0) // the VNI: the segment
	a.i(lshi, 4, 0, 0, 16)
	a.i(ldxb, 5, 2, 47, 0)
	a.i(lshi, 5, 0, 0, 8)
	a.i(orr, 4, 5, 0, 0)
	a.i(ldxb, 5, 2, 48, 0)
	a.i(orr, 4, 5, 0, 0)
	a.i(stxw, 10, 4, -16, 0)
	a.i(sth, 10, 0, -6, 0)
	for _, off := range []int16{0, 4, 8} { // inner destination and source MACs
		a.i(ldxw, 4, 2, 50+off, 0)
		a.i(stxw, 10, 4, macs+off, 0)
	}
	a.i(ldxw, 4, 2, 56, 0) // the inner source MAC again, 4-aligned at fp-48
	a.i(stxw, 10, 4, smac, 0)
	a.i(ldxh, 4, 2, 60, 0)
	a.i(stxh, 10, 4, smac+4, 0)
	a.i(ldxw, 8, 2, 26, 0) // outer source
	a.i(ldxw, 9, 2, 30, 0) // outer destination
	a.i(movi, 1, 0, 0, 0)  // the outer IPv4 header's checksum must hold
	a.i(movi, 2, 0, 0, 0)
	a.i(ldxw, 3, 6, skbData, 0)
	a.i(addi, 3, 0, 0, 14)
	a.i(ldxw, 4, 6, skbDataEnd, 0)
	a.i(movr, 5, 3, 0, 0)
	a.i(addi, 5, 0, 0, 20)
	a.jump(jgtr, 5, 4, 0, "pass")
	a.i(movi, 4, 0, 0, 20)
	a.i(movi, 5, 0, 0, 0)
	a.i(call, 0, 0, 0, fnCsumDiff)
	a.fold(0, 4)
	a.jump(jnei, 0, 0, 0xffff, "pass")
	a.lookupMAC(dests, 10, smac) // the inner source MAC
	a.i(ldxw, 4, 0, valPeer, 0)
	a.jump(jnei, 4, 0, 0, "pass") // the sender is local?
	a.i(ldxw, 4, 0, valRemote, 0)
	a.jump(jner, 4, 8, 0, "pass") // not from the sender's VTEP
	a.i(ldxw, 4, 0, valLocal, 0)
	a.jump(jner, 4, 9, 0, "pass") // not to this host's VTEP
	a.lookupMAC(dests, 10, macs)  // the inner destination MAC
	a.i(ldxw, 4, 0, valPeer, 0)
	a.jump(jeqi, 4, 0, 0, "pass") // not a local sandbox
	a.i(ldxw, 7, 0, valIfindex, 0)
	a.i(movr, 1, 6, 0, 0)
	a.i(movi, 2, 0, 0, -encapLen)
	a.i(movi, 3, 0, 0, adjRoomMAC)
	a.i(movi, 4, 0, 0, 1) // BPF_F_ADJ_ROOM_FIXED_GSO: the inner segment size is the GSO size already
	a.i(call, 0, 0, 0, fnSkbAdjustRoom)
	a.jump(jnei, 0, 0, 0, "pass") // refused before changing anything
	a.i(movr, 1, 6, 0, 0)
	a.i(movi, 2, 0, 0, 0)
	a.i(movr, 3, 10, 0, 0)
	a.i(addi, 3, 0, 0, macs)
	a.i(movi, 4, 0, 0, 12)
	a.i(movi, 5, 0, 0, 0)
	a.i(call, 0, 0, 0, fnSkbStoreBytes)
	a.jump(jnei, 0, 0, 0, "shot")
	a.i(movr, 1, 6, 0, 0)
	a.i(movi, 2, 0, 0, csumDec)
	a.i(call, 0, 0, 0, fnCsumLvl)
	a.i(movr, 1, 7, 0, 0)
	a.i(movi, 2, 0, 0, 0)
	a.i(call, 0, 0, 0, bpf.FnRedirectPeer)
	a.i(exit, 0, 0, 0, 0)
	a.label("pull")
	a.i(movr, 1, 6, 0, 0)
	a.i(movi, 2, 0, 0, hdr)
	a.i(call, 0, 0, 0, fnSkbPullData)
	load()
	a.jump(jgtr, 4, 3, 0, "pass")
	a.jump(ja, 0, 0, 0, "parse")
	a.label("shot")
	a.ret(tcShot)
	a.label("pass")
	a.ret(tcxNext)
	return a.done()
}

// Close detaches every link and frees the program and maps.
func (p *Path) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for idx, fd := range p.links {
		unix.Close(fd)
		delete(p.links, idx)
	}
	for idx, u := range p.unders {
		unix.Close(u.fd)
		delete(p.unders, idx)
	}
	for _, fd := range []*int{&p.prog, &p.decap, &p.ends, &p.dests} {
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
	fd, err := p.link(p.prog, ifindex)
	if err != nil {
		_ = bpf.MapDelete(p.ends, u32(ifindex))
		return fmt.Errorf("fast path: attach to interface %d: %w", ifindex, err)
	}
	p.links[ifindex] = fd
	return nil
}

// link attaches prog to ifindex's TCX ingress in the path's namespace.
func (p *Path) link(prog, ifindex int) (int, error) {
	var fd int
	attach := func() error {
		var err error
		fd, err = bpf.LinkNew(prog, ifindex, bpf.AttachTCXIngress)
		return err
	}
	var err error
	if p.ns == "" {
		err = attach()
	} else {
		err = tns.Do(p.ns, attach)
	}
	return fd, err
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
	v := make([]byte, valueSize)
	bpf.NE.PutUint32(v[valIfindex:], uint32(ifindex))
	if peer {
		bpf.NE.PutUint32(v[valPeer:], 1)
	}
	return p.setDest(segment, mac, v)
}

// Tunnel is how this host reaches a remote endpoint over an IPv4
// underlay without its VXLAN device: the VNI, the VTEPs and the underlay
// interface the encapsulated packets leave by.
type Tunnel struct {
	VNI           int
	Local, Remote netip.Addr
	Under         int // the underlay interface's index
}

// SetRemote sends frames for a remote endpoint's mac in segment out of the
// VXLAN device vxIndex, or, where t can be done here (an IPv4 underlay
// and an underlay interface), encapsulates IPv4 frames itself and sends
// them out of t.Under; other frames still go to the device. Packets from
// the endpoint to local sandboxes are decapsulated on t.Under (see
// AttachUnderlay) only when they come from t.Remote to t.Local.
func (p *Path) SetRemote(segment int, mac net.HardwareAddr, vxIndex int, t Tunnel) error {
	v := make([]byte, valueSize)
	bpf.NE.PutUint32(v[valIfindex:], uint32(vxIndex))
	if t.Under > 0 && t.Local.Is4() && t.Remote.Is4() && t.VNI > 0 && t.VNI < 1<<24 {
		bpf.NE.PutUint32(v[valUnder:], uint32(t.Under))
		l, r := t.Local.As4(), t.Remote.As4()
		copy(v[valRemote:], r[:])
		copy(v[valLocal:], l[:])
		binary.BigEndian.PutUint32(v[valVNI:], uint32(t.VNI)<<8)
		// The outer header's words but tot_len, the ID and the ECN bits
		// (added by the program): version/ihl, TTL 64 / UDP, the two
		// addresses.
		sum := uint32(0x4500) + (64<<8 | 17)
		for _, a := range [][4]byte{l, r} {
			sum += uint32(binary.BigEndian.Uint16(a[:2])) + uint32(binary.BigEndian.Uint16(a[2:]))
		}
		bpf.NE.PutUint32(v[valCsum:], sum)
	}
	return p.setDest(segment, mac, v)
}

func (p *Path) setDest(segment int, mac net.HardwareAddr, v []byte) error {
	k, err := destKey(segment, mac)
	if err != nil {
		return err
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

// AttachUnderlay puts the decapsulation program on the underlay interface
// ifindex for segment (once per interface; the program serves every
// segment). DropSegment takes it off when no segment uses it.
func (p *Path) AttachUnderlay(ifindex, segment int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.decap < 0 {
		return errors.New("fast path: closed")
	}
	for idx, u := range p.unders { // a segment moved to another underlay
		if idx != ifindex && u.segs[segment] {
			p.releaseUnderlay(idx, segment)
		}
	}
	if u, ok := p.unders[ifindex]; ok {
		u.segs[segment] = true
		return nil
	}
	fd, err := p.link(p.decap, ifindex)
	if err != nil {
		return fmt.Errorf("fast path: attach decapsulation to interface %d: %w", ifindex, err)
	}
	p.unders[ifindex] = &underlay{fd: fd, segs: map[int]bool{segment: true}}
	return nil
}

// releaseUnderlay takes segment off ifindex, and the program when no
// segment is left. p.mu is held.
func (p *Path) releaseUnderlay(ifindex, segment int) {
	u, ok := p.unders[ifindex]
	if !ok {
		return
	}
	delete(u.segs, segment)
	if len(u.segs) == 0 {
		unix.Close(u.fd)
		delete(p.unders, ifindex)
	}
}

// Underlays lists the interfaces with the decapsulation program.
func (p *Path) Underlays() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var l []int
	for idx := range p.unders {
		l = append(l, idx)
	}
	return l
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
	for idx := range p.unders {
		p.releaseUnderlay(idx, segment)
	}
	return errors.Join(errs...)
}

// Dest reports where frames for mac in segment go (ok false: the bridge).
func (p *Path) Dest(segment int, mac net.HardwareAddr) (ifindex int, peer, ok bool, err error) {
	e, ok, err := p.Lookup(segment, mac)
	return e.Ifindex, e.Peer, ok, err
}

// Entry is one destination as the map has it.
type Entry struct {
	Ifindex int
	Peer    bool       // into the veth's peer (a local sandbox)
	Remote  netip.Addr // the remote VTEP the program encapsulates to; invalid: the device does
}

// Lookup reports mac's entry in segment (ok false: none, the bridge).
func (p *Path) Lookup(segment int, mac net.HardwareAddr) (e Entry, ok bool, err error) {
	k, err := destKey(segment, mac)
	if err != nil {
		return Entry{}, false, err
	}
	v := make([]byte, valueSize)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dests < 0 {
		return Entry{}, false, errors.New("fast path: closed")
	}
	ok, err = bpf.MapLookup(p.dests, k, v)
	if !ok || err != nil {
		return Entry{}, false, err
	}
	e = Entry{Ifindex: int(bpf.NE.Uint32(v[valIfindex:])), Peer: bpf.NE.Uint32(v[valPeer:]) != 0}
	if bpf.NE.Uint32(v[valUnder:]) != 0 {
		e.Remote = netip.AddrFrom4([4]byte(v[valRemote : valRemote+4]))
	}
	return e, true, nil
}

// MACs lists the MACs segment has entries for.
func (p *Path) MACs(segment int) []net.HardwareAddr {
	p.mu.Lock()
	defer p.mu.Unlock()
	var l []net.HardwareAddr
	for m := range p.segs[segment] {
		l = append(l, net.HardwareAddr(m[:]))
	}
	return l
}

// Attached reports whether the program is attached to ifindex by this Path.
func (p *Path) Attached(ifindex int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.links[ifindex]
	return ok
}
