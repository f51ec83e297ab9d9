package portmap

// The connect redirect is the fast path for TCP ports published on a
// loopback address: instead of accepting a local client's connection and
// relaying it over a second one (the userland proxy, whose second TCP
// connection costs as much in the kernel as the first), a program on the
// cgroup v2 root's connect hooks (BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
// BPF_CGROUP_INET4_CONNECT and INET6_CONNECT) rewrites the client's
// connect() to 127.0.0.1:P (or [::1]:P) into a connect() to the sandbox's address and port. The
// client then talks to the sandbox over one connection and nothing is
// proxied. Socket-level load balancing in Cilium works the same way.
//
// Scope. The program looks up (network namespace cookie of the socket,
// destination address, destination port) in a hash map the daemon fills;
// an entry carries the cookie of the namespace the port was held in (the
// daemon's host namespace), so sockets of every other namespace (sandboxes,
// other daemons, the machine's own namespace when the daemon runs in
// another) are never touched. Only TCP sockets, only within a family (an
// IPv6 publish of an IPv4 backend is the proxy's), only sockets not bound
// to an address or a device before connect (a client that bound 127.0.0.1
// could not reach the sandbox from that source: the proxy serves it). A
// companion program on BPF_CGROUP_INET4_GETPEERNAME (and INET6) makes
// getpeername() on a redirected socket show 127.0.0.1:P as the proxy did:
// the connect program records the original address in an LRU hash keyed by the
// socket's cookie (cookies are never reused within a boot; an entry of a
// long-closed socket is evicted, never wrongly applied).
//
// Lifetime. Both programs are attached with BPF links
// (BPF_LINK_CREATE) held by this process's fds and never pinned: when the
// daemon exits or is killed the kernel detaches them and frees the maps, so
// no redirect outlives its daemon. Links compose: each daemon (tests run
// several, each in its own namespace) attaches its own four.
//
// Fallback. The held socket keeps listening and the proxy keeps serving it
// in every case: it serves what is not redirected (UDP, clients that bound
// first, raw sockets) and keeps the port reserved. When the kernel refuses
// (no cgroup v2, no BPF, EPERM, a verifier refusal) the daemon logs that
// once at info and everything goes through the proxy, as before.
// TETHER_PROXY_REDIRECT=0 turns the redirect off (read once at start).

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	redirectEnv        = "TETHER_PROXY_REDIRECT"
	redirectMaxEntries = 16384
	redirectMaxSockets = 65536
)

// Offsets in struct bpf_sock_addr and struct bpf_sock.
const (
	ctxUserIP4  = 4
	ctxUserIP6  = 8
	ctxUserPort = 24
	ctxProtocol = 36
	ctxSk       = 64
	skBoundDev  = 0
	skSrcIP4    = 24
	skSrcIP6    = 28
	ipprotoTCP  = 6
)

// family is what differs between the IPv4 and the IPv6 programs.
type family struct {
	words            int // 32-bit words of an address
	ctxAddr, skSrc   int16
	connect, peer    uint32 // attach types
	connName, pName  string
	svcName, revName string
}

var (
	inet4 = family{1, ctxUserIP4, skSrcIP4, attachInet4Connect, attachInet4Peername, "tether_conn4", "tether_peer4", "tether_redir4", "tether_peer4"}
	inet6 = family{4, ctxUserIP6, skSrcIP6, attachInet6Connect, attachInet6Peername, "tether_conn6", "tether_peer6", "tether_redir6", "tether_peer6"}
)

// keySize: u64 netns cookie, the address, be16 port in a u32, zero padding
// to 8 bytes. valueSize: the address, be16 port in a u32.
func (f family) keySize() int   { return (8 + 4*f.words + 4 + 7) &^ 7 }
func (f family) valueSize() int { return 4*f.words + 4 }

func familyOf(a netip.Addr) family {
	if a.Is4() {
		return inet4
	}
	return inet6
}

// redirectKey is the map key for a connect() to dst from a socket in the
// namespace with cookie netns.
func redirectKey(netns uint64, dst netip.AddrPort) []byte {
	f := familyOf(dst.Addr())
	k := make([]byte, f.keySize())
	ne.PutUint64(k[0:], netns)
	copy(k[8:], dst.Addr().AsSlice())
	o := 8 + 4*f.words
	k[o], k[o+1] = byte(dst.Port()>>8), byte(dst.Port())
	return k
}

// redirectValue is the map value: the backend's address and port as
// connect writes them to user_ip4/user_ip6 and user_port (network byte
// order).
func redirectValue(to netip.AddrPort) []byte {
	f := familyOf(to.Addr())
	v := make([]byte, f.valueSize())
	copy(v, to.Addr().AsSlice())
	o := 4 * f.words
	v[o], v[o+1] = byte(to.Port()>>8), byte(to.Port())
	return v
}

// asm collects instructions; jumps to the final "return 1" are patched
// by done.
type asm struct {
	p     []bpfInsn
	allow []int
}

func (a *asm) emit(x ...bpfInsn) { a.p = append(a.p, x...) }

// toAllowIf jumps to "return 1" when reg code imm holds (code 0x55:
// !=, 0x15: ==).
func (a *asm) toAllowIf(code, reg byte, imm int32) {
	a.allow = append(a.allow, len(a.p))
	a.emit(ins(code, reg, 0, 0, imm))
}

func (a *asm) done() []bpfInsn {
	end := len(a.p)
	a.emit(ins(0xb7, 0, 0, 0, 1), ins(0x95, 0, 0, 0, 0))
	for _, i := range a.allow {
		a.p[i].Off = int16(end - i - 1)
	}
	return a.p
}

// connectProg is, in C (IPv4; IPv6 has four address words):
//
//	if (ctx->protocol != IPPROTO_TCP || ctx->sk->bound_dev_if || ctx->sk->src_ip4)
//		return 1;
//	key = {bpf_get_netns_cookie(ctx), ctx->user_ip4, ctx->user_port};
//	if (!(to = bpf_map_lookup_elem(&svc, &key))) return 1;
//	orig = {ctx->user_ip4, ctx->user_port};
//	cookie = bpf_get_socket_cookie(ctx);
//	bpf_map_update_elem(&rev, &cookie, &orig, BPF_ANY);
//	ctx->user_ip4 = to->ip4; ctx->user_port = to->port;
//	return 1;
func connectProg(f family, svc, rev int) []bpfInsn {
	key := int16(-f.keySize())                // the map key on the stack
	orig := key - int16((f.valueSize()+7)&^7) // the reverse map's value
	cookie := orig - 8                        // its key
	w := int16(f.words)
	var a asm
	a.emit(
		ins(0xbf, 6, 1, 0, 0),           // r6 = ctx
		ins(0x61, 2, 6, ctxProtocol, 0), // r2 = ctx->protocol
	)
	a.toAllowIf(0x55, 2, ipprotoTCP)
	a.emit(
		ins(0x79, 7, 6, ctxSk, 0),      // r7 = ctx->sk
		ins(0x61, 2, 7, skBoundDev, 0), // r2 = sk->bound_dev_if
	)
	a.toAllowIf(0x55, 2, 0)
	for i := range w {
		a.emit(ins(0x61, 2, 7, f.skSrc+4*i, 0)) // r2 = sk->src_ip[i]
		a.toAllowIf(0x55, 2, 0)
	}
	a.emit(
		ins(0xbf, 1, 6, 0, 0),
		ins(0x85, 0, 0, 0, fnGetNetnsCookie),
		ins(0x7b, 10, 0, key, 0), // key.netns = r0
	)
	for i := range w { // key.addr, orig.addr
		a.emit(
			ins(0x61, 2, 6, f.ctxAddr+4*i, 0),
			ins(0x63, 10, 2, key+8+4*i, 0),
			ins(0x63, 10, 2, orig+4*i, 0),
		)
	}
	a.emit(
		ins(0x61, 2, 6, ctxUserPort, 0),
		ins(0x63, 10, 2, key+8+4*w, 0), // key.port (be16 in the low bytes, then zeros)
		ins(0x63, 10, 2, orig+4*w, 0),
	)
	if f.keySize() > 8+4*f.words+4 {
		a.emit(ins(0x62, 10, 0, key+8+4*w+4, 0)) // key padding = 0
	}
	a.emit(ldMap(1, svc)...)
	a.emit(
		ins(0xbf, 2, 10, 0, 0),
		ins(0x07, 2, 0, 0, int32(key)),
		ins(0x85, 0, 0, 0, fnMapLookupElem),
	)
	a.toAllowIf(0x15, 0, 0) // not published: leave it
	a.emit(
		ins(0xbf, 8, 0, 0, 0), // r8 = backend
		ins(0xbf, 1, 6, 0, 0),
		ins(0x85, 0, 0, 0, fnGetSocketCookieFn),
		ins(0x7b, 10, 0, cookie, 0),
	)
	a.emit(ldMap(1, rev)...)
	a.emit(
		ins(0xbf, 2, 10, 0, 0),
		ins(0x07, 2, 0, 0, int32(cookie)),
		ins(0xbf, 3, 10, 0, 0),
		ins(0x07, 3, 0, 0, int32(orig)),
		ins(0xb7, 4, 0, 0, 0), // BPF_ANY
		ins(0x85, 0, 0, 0, fnMapUpdateElem),
	)
	for i := range w {
		a.emit(ins(0x61, 2, 8, 4*i, 0), ins(0x63, 6, 2, f.ctxAddr+4*i, 0))
	}
	a.emit(ins(0x61, 2, 8, 4*w, 0), ins(0x63, 6, 2, ctxUserPort, 0))
	return a.done()
}

// peerProg is, in C (IPv4):
//
//	cookie = bpf_get_socket_cookie(ctx);
//	if ((orig = bpf_map_lookup_elem(&rev, &cookie)))
//		ctx->user_ip4 = orig->ip4, ctx->user_port = orig->port;
//	return 1;
func peerProg(f family, rev int) []bpfInsn {
	var a asm
	a.emit(
		ins(0xbf, 6, 1, 0, 0),
		ins(0x85, 0, 0, 0, fnGetSocketCookieFn),
		ins(0x7b, 10, 0, -8, 0),
	)
	a.emit(ldMap(1, rev)...)
	a.emit(
		ins(0xbf, 2, 10, 0, 0),
		ins(0x07, 2, 0, 0, -8),
		ins(0x85, 0, 0, 0, fnMapLookupElem),
	)
	a.toAllowIf(0x15, 0, 0)
	w := int16(f.words)
	for i := range w {
		a.emit(ins(0x61, 2, 0, 4*i, 0), ins(0x63, 6, 2, f.ctxAddr+4*i, 0))
	}
	a.emit(ins(0x61, 2, 0, 4*w, 0), ins(0x63, 6, 2, ctxUserPort, 0))
	return a.done()
}

// cgroup2Root finds the mount point of the cgroup v2 hierarchy's root in
// a /proc/self/mountinfo text ("" when there is none).
func cgroup2Root(r io.Reader) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) >= 5 && len(g) >= 1 && g[0] == "cgroup2" && f[3] == "/" {
			return f[4]
		}
	}
	return ""
}

// openCgroup2 opens the cgroup v2 root directory: at the daemon's own mount
// of the hierarchy when it has one; else (a daemon started with `ip netns
// exec` gets a fresh sysfs without /sys/fs/cgroup, in a mount namespace of
// its own) by mounting the hierarchy on a temporary directory, opening its
// root and detaching the mount again at once: the open descriptor is all the
// attach needs, and no mount is left behind.
func openCgroup2() (fd int, where string, err error) {
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		cg := cgroup2Root(f)
		f.Close()
		if cg != "" {
			fd, err := unix.Open(cg, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return -1, "", fmt.Errorf("open cgroup %s: %w", cg, err)
			}
			return fd, cg, nil
		}
	}
	dir, err := os.MkdirTemp("", "tether-cgroup2-")
	if err != nil {
		return -1, "", fmt.Errorf("no cgroup v2 hierarchy mounted, and no directory to mount one: %w", err)
	}
	defer os.Remove(dir)
	if err := unix.Mount("cgroup2", dir, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return -1, "", fmt.Errorf("no cgroup v2 hierarchy mounted, and mounting one failed: %w", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", fmt.Errorf("open cgroup2 mounted on %s: %w", dir, err)
	}
	return fd, "cgroup2 (mounted for the attach, then detached)", nil
}

// redirector is this process's programs, their maps and links.
type redirector struct {
	svc     map[int]int // address words -> (netns, address, port) -> backend
	fds     []int
	progIDs []uint32
	cgroup  string
}

// redirectOn is false with TETHER_PROXY_REDIRECT=0 (read once at start).
var redirectOn = os.Getenv(redirectEnv) != "0"

var redirect struct {
	once, offLog sync.Once
	r            *redirector
	err          error
}

// theRedirector attaches the programs the first time it is asked and
// returns nil when the redirect is off or the kernel refused (logged once).
func theRedirector() *redirector {
	if !redirectOn {
		redirect.offLog.Do(func() {
			slog.Info("connect redirect for loopback publishes off: the userland proxy serves them", "env", redirectEnv+"=0")
		})
		return nil
	}
	redirect.once.Do(func() {
		redirect.r, redirect.err = newRedirector()
		if redirect.err != nil {
			slog.Info("connect redirect for loopback publishes unavailable: the userland proxy serves them", "err", redirect.err)
			return
		}
		slog.Info("connect redirect for loopback TCP publishes attached", "cgroup", redirect.r.cgroup, "programs", redirect.r.progIDs)
	})
	return redirect.r
}

func newRedirector() (_ *redirector, err error) {
	cfd, cg, err := openCgroup2()
	if err != nil {
		return nil, err
	}
	defer unix.Close(cfd)
	r := &redirector{cgroup: cg, svc: map[int]int{}}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	for _, f := range []family{inet4, inet6} {
		svc, err := bpfMapNew(bpfMapTypeHash, uint32(f.keySize()), uint32(f.valueSize()), redirectMaxEntries, f.svcName)
		if err != nil {
			return nil, err
		}
		r.fds = append(r.fds, svc)
		r.svc[f.words] = svc
		rev, err := bpfMapNew(bpfMapTypeLRUHash, 8, uint32(f.valueSize()), redirectMaxSockets, f.revName)
		if err != nil {
			return nil, err
		}
		r.fds = append(r.fds, rev)
		for _, p := range []struct {
			name   string
			attach uint32
			insns  []bpfInsn
		}{
			{f.connName, f.connect, connectProg(f, svc, rev)},
			{f.pName, f.peer, peerProg(f, rev)},
		} {
			pfd, err := bpfProgNew(bpfProgTypeSockAddr, p.attach, p.insns, p.name)
			if err != nil {
				return nil, err
			}
			r.fds = append(r.fds, pfd)
			id, _, err := bpfProgID(pfd)
			if err != nil {
				return nil, err
			}
			r.progIDs = append(r.progIDs, id)
			lfd, err := bpfLinkNew(pfd, cfd, p.attach)
			if err != nil {
				return nil, fmt.Errorf("attach %s to cgroup %s: %w", p.name, cg, err)
			}
			r.fds = append(r.fds, lfd)
		}
	}
	return r, nil
}

// close detaches (closing the links) and frees everything.
func (r *redirector) close() {
	for i := len(r.fds) - 1; i >= 0; i-- {
		unix.Close(r.fds[i])
	}
	r.fds = nil
}

// mapFor is the map of the family of a key.
func (r *redirector) mapFor(key []byte) int {
	if len(key) == inet4.keySize() {
		return r.svc[inet4.words]
	}
	return r.svc[inet6.words]
}

func (r *redirector) add(key, value []byte) error {
	return bpfMapUpdate(r.mapFor(key), key, value)
}

func (r *redirector) del(key []byte) error {
	return bpfMapDelete(r.mapFor(key), key)
}

// netnsCookie is the cookie of the network namespace fd's socket is in.
func netnsCookie(fd int) (uint64, error) {
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("SO_NETNS_COOKIE: %w", err)
	}
	return c, nil
}

// redirectFrom is the loopback address whose connects a TCP hold on addr
// can redirect: the address itself when it is a loopback one (127.0.0.0/8,
// ::1), 127.0.0.1 for 0.0.0.0 and ::1 for :: (the proxy serves loopback of
// a wildcard publish: the kernel path skips it), none otherwise.
func redirectFrom(addr netip.Addr) (netip.Addr, bool) {
	switch {
	case addr.IsLoopback():
		return addr, true
	case addr == netip.IPv4Unspecified():
		return netip.AddrFrom4([4]byte{127, 0, 0, 1}), true
	case addr == netip.IPv6Unspecified():
		return netip.IPv6Loopback(), true
	}
	return netip.Addr{}, false
}

// startRedirect adds the redirect of h's loopback address to backend
// (called by Proxy with h.mu held). Nothing happens when the hold does
// not qualify or the redirect is unavailable: the proxy serves.
func (h *Held) startRedirect(backend netip.AddrPort) {
	if h.Proto != "tcp" {
		return
	}
	from, ok := redirectFrom(h.Addr.Addr())
	if !ok || from.Is4() != backend.Addr().Is4() { // an IPv6 publish of an IPv4 backend: the proxy
		return
	}
	r := theRedirector()
	if r == nil {
		return
	}
	var cookie uint64
	var cerr error
	rc, err := h.ln.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) { cookie, cerr = netnsCookie(int(fd)) })
	}
	if err = errors.Join(err, cerr); err != nil {
		slog.Warn("connect redirect: the userland proxy serves this port", "addr", h.Addr, "err", err)
		return
	}
	key := redirectKey(cookie, netip.AddrPortFrom(from, h.Addr.Port()))
	if err := r.add(key, redirectValue(backend)); err != nil {
		slog.Warn("connect redirect: the userland proxy serves this port", "addr", h.Addr, "err", err)
		return
	}
	h.redirect, h.redirector = key, r
}

// stopRedirect removes h's redirect (before its socket closes).
func (h *Held) stopRedirect() {
	if h.redirector == nil {
		return
	}
	if err := h.redirector.del(h.redirect); err != nil {
		slog.Warn("connect redirect: remove entry", "addr", h.Addr, "err", err)
	}
	h.redirect, h.redirector = nil, nil
}
