package portmap

// The connect redirect is the fast path for TCP ports published on a
// loopback address: instead of accepting a local client's connection and
// relaying it over a second one (the userland proxy, whose second TCP
// connection costs as much in the kernel as the first), a program on the
// cgroup v2 root's connect4 hook (BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
// BPF_CGROUP_INET4_CONNECT) rewrites the client's connect() to
// 127.0.0.1:P into a connect() to the sandbox's address and port. The
// client then talks to the sandbox over one connection and nothing is
// proxied. Socket-level load balancing in Cilium works the same way.
//
// Scope. The program looks up (network namespace cookie of the socket,
// destination address, destination port) in a hash map the daemon fills;
// an entry carries the cookie of the namespace the port was held in (the
// daemon's host namespace), so sockets of every other namespace (sandboxes,
// other daemons, the machine's own namespace when the daemon runs in
// another) are never touched. Only TCP sockets, only IPv4, only sockets not
// bound to an address or a device before connect (a client that bound
// 127.0.0.1 could not reach the sandbox from that source: the proxy serves
// it). A companion program on BPF_CGROUP_INET4_GETPEERNAME makes
// getpeername() on a redirected socket show 127.0.0.1:P as the proxy did:
// connect4 records the original address in an LRU hash keyed by the
// socket's cookie (cookies are never reused within a boot; an entry of a
// long-closed socket is evicted, never wrongly applied).
//
// Lifetime. Both programs are attached with BPF links
// (BPF_LINK_CREATE) held by this process's fds and never pinned: when the
// daemon exits or is killed the kernel detaches them and frees the maps, so
// no redirect outlives its daemon. Links compose: each daemon (tests run
// several, each in its own namespace) attaches its own pair.
//
// Fallback. The held socket keeps listening and the proxy keeps serving it
// in every case: it serves what is not redirected (UDP, IPv6, clients that
// bound first) and keeps the port reserved. When the kernel refuses
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
	redirectKeySize    = 16 // u64 netns cookie, be32 address, be16 port, 2 zero bytes
	redirectValueSize  = 8  // be32 address, be16 port, 2 zero bytes
	progNameConnect4   = "tether_conn4"
	progNamePeer4      = "tether_peer4"
)

// Offsets in struct bpf_sock_addr and struct bpf_sock.
const (
	ctxUserIP4   = 4
	ctxUserPort  = 24
	ctxProtocol  = 36
	ctxSk        = 64
	skBoundDev   = 0
	skSrcIP4     = 24
	ipprotoTCP   = 6
	stackKey     = -16 // the 16-byte map key
	stackCookie  = -24 // the socket cookie (reverse map key)
	stackOrigDst = -32 // the original address and port (reverse map value)
)

// redirectKey is the map key for a connect() to dst from a socket in the
// namespace with cookie netns; dst is IPv4.
func redirectKey(netns uint64, dst netip.AddrPort) []byte {
	k := make([]byte, redirectKeySize)
	ne.PutUint64(k[0:], netns)
	a := dst.Addr().As4()
	copy(k[8:12], a[:])
	k[12], k[13] = byte(dst.Port()>>8), byte(dst.Port())
	return k
}

// redirectValue is the map value: the backend's address and port as
// connect4 writes them to user_ip4/user_port (network byte order).
func redirectValue(to netip.AddrPort) []byte {
	v := make([]byte, redirectValueSize)
	a := to.Addr().As4()
	copy(v[0:4], a[:])
	v[4], v[5] = byte(to.Port()>>8), byte(to.Port())
	return v
}

// connect4Prog is, in C:
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
func connect4Prog(svc, rev int) []bpfInsn {
	var p []bpfInsn
	var toAllow []int // jumps to patch
	jmp := func(code byte, reg byte, imm int32) {
		toAllow = append(toAllow, len(p))
		p = append(p, ins(code, reg, 0, 0, imm))
	}
	p = append(p,
		ins(0xbf, 6, 1, 0, 0),           // r6 = ctx
		ins(0x61, 2, 6, ctxProtocol, 0), // r2 = ctx->protocol
	)
	jmp(0x55, 2, ipprotoTCP) // if r2 != TCP goto allow
	p = append(p,
		ins(0x79, 7, 6, ctxSk, 0),      // r7 = ctx->sk
		ins(0x61, 2, 7, skBoundDev, 0), // r2 = sk->bound_dev_if
	)
	jmp(0x55, 2, 0)
	p = append(p, ins(0x61, 2, 7, skSrcIP4, 0)) // r2 = sk->src_ip4
	jmp(0x55, 2, 0)
	p = append(p,
		ins(0xbf, 1, 6, 0, 0),
		ins(0x85, 0, 0, 0, fnGetNetnsCookie),
		ins(0x7b, 10, 0, stackKey, 0), // key.netns = r0
		ins(0x61, 2, 6, ctxUserIP4, 0),
		ins(0x63, 10, 2, stackKey+8, 0), // key.addr
		ins(0x61, 2, 6, ctxUserPort, 0),
		ins(0x63, 10, 2, stackKey+12, 0), // key.port (be16 in the low bytes, then zeros)
	)
	p = append(p, ldMap(1, svc)...)
	p = append(p,
		ins(0xbf, 2, 10, 0, 0),
		ins(0x07, 2, 0, 0, stackKey),
		ins(0x85, 0, 0, 0, fnMapLookupElem),
	)
	jmp(0x15, 0, 0) // if r0 == 0 goto allow
	p = append(p,
		ins(0xbf, 8, 0, 0, 0), // r8 = backend
		ins(0x61, 2, 6, ctxUserIP4, 0),
		ins(0x63, 10, 2, stackOrigDst, 0),
		ins(0x61, 2, 6, ctxUserPort, 0),
		ins(0x63, 10, 2, stackOrigDst+4, 0),
		ins(0xbf, 1, 6, 0, 0),
		ins(0x85, 0, 0, 0, fnGetSocketCookieFn),
		ins(0x7b, 10, 0, stackCookie, 0),
	)
	p = append(p, ldMap(1, rev)...)
	p = append(p,
		ins(0xbf, 2, 10, 0, 0),
		ins(0x07, 2, 0, 0, stackCookie),
		ins(0xbf, 3, 10, 0, 0),
		ins(0x07, 3, 0, 0, stackOrigDst),
		ins(0xb7, 4, 0, 0, 0), // BPF_ANY
		ins(0x85, 0, 0, 0, fnMapUpdateElem),
		ins(0x61, 2, 8, 0, 0),
		ins(0x63, 6, 2, ctxUserIP4, 0),
		ins(0x61, 2, 8, 4, 0),
		ins(0x63, 6, 2, ctxUserPort, 0),
	)
	allow := len(p)
	p = append(p, ins(0xb7, 0, 0, 0, 1), ins(0x95, 0, 0, 0, 0))
	for _, i := range toAllow {
		p[i].off = int16(allow - i - 1)
	}
	return p
}

// peer4Prog is, in C:
//
//	cookie = bpf_get_socket_cookie(ctx);
//	if ((orig = bpf_map_lookup_elem(&rev, &cookie)))
//		ctx->user_ip4 = orig->ip4, ctx->user_port = orig->port;
//	return 1;
func peer4Prog(rev int) []bpfInsn {
	p := []bpfInsn{
		ins(0xbf, 6, 1, 0, 0),
		ins(0x85, 0, 0, 0, fnGetSocketCookieFn),
		ins(0x7b, 10, 0, -8, 0),
	}
	p = append(p, ldMap(1, rev)...)
	p = append(p,
		ins(0xbf, 2, 10, 0, 0),
		ins(0x07, 2, 0, 0, -8),
		ins(0x85, 0, 0, 0, fnMapLookupElem),
		ins(0x15, 0, 0, 4, 0), // if r0 == 0 goto out
		ins(0x61, 2, 0, 0, 0),
		ins(0x63, 6, 2, ctxUserIP4, 0),
		ins(0x61, 2, 0, 4, 0),
		ins(0x63, 6, 2, ctxUserPort, 0),
		ins(0xb7, 0, 0, 0, 1), // out:
		ins(0x95, 0, 0, 0, 0),
	)
	return p
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

// redirector is this process's pair of programs, their maps and links.
type redirector struct {
	mu      sync.Mutex
	svc     int // (netns, address, port) -> backend
	rev     int // socket cookie -> original address and port
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
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	cg := cgroup2Root(f)
	f.Close()
	if cg == "" {
		return nil, errors.New("no cgroup v2 hierarchy mounted")
	}
	r := &redirector{cgroup: cg}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	if r.svc, err = bpfMapNew(bpfMapTypeHash, redirectKeySize, redirectValueSize, redirectMaxEntries, "tether_redir"); err != nil {
		return nil, err
	}
	r.fds = append(r.fds, r.svc)
	if r.rev, err = bpfMapNew(bpfMapTypeLRUHash, 8, redirectValueSize, redirectMaxSockets, "tether_peer"); err != nil {
		return nil, err
	}
	r.fds = append(r.fds, r.rev)
	cfd, err := unix.Open(cg, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", cg, err)
	}
	defer unix.Close(cfd)
	for _, p := range []struct {
		name   string
		attach uint32
		insns  []bpfInsn
	}{
		{progNameConnect4, attachInet4Connect, connect4Prog(r.svc, r.rev)},
		{progNamePeer4, attachInet4Peername, peer4Prog(r.rev)},
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
	for _, fd := range r.fds {
		unix.CloseOnExec(fd) // the daemon's children must not keep the link alive
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

func (r *redirector) add(key, value []byte) error {
	return bpfMapUpdate(r.svc, key, value)
}

func (r *redirector) del(key []byte) error {
	return bpfMapDelete(r.svc, key)
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
// can redirect: the address itself when it is an IPv4 loopback one,
// 127.0.0.1 for 0.0.0.0 (the proxy serves 127.0.0.1:P of a wildcard
// publish: the kernel path skips 127.0.0.0/8), none otherwise.
func redirectFrom(addr netip.Addr) (netip.Addr, bool) {
	switch {
	case addr.Is4() && addr.IsLoopback():
		return addr, true
	case addr == netip.IPv4Unspecified():
		return netip.AddrFrom4([4]byte{127, 0, 0, 1}), true
	}
	return netip.Addr{}, false
}

// startRedirect adds the redirect of h's loopback address to backend
// (called by Proxy with h.mu held). Nothing happens when the hold does
// not qualify or the redirect is unavailable: the proxy serves.
func (h *Held) startRedirect(backend netip.AddrPort) {
	if h.Proto != "tcp" || !backend.Addr().Is4() {
		return
	}
	from, ok := redirectFrom(h.Addr.Addr())
	if !ok {
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
