package dns

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// Defaults of Config.
const (
	DefaultTimeout               = 2 * time.Second
	DefaultMaxInFlight           = 1024
	DefaultMaxInFlightPerSandbox = 64
	DefaultMaxTCPConns           = 1024
	DefaultMaxTCPConnsPerSandbox = 32
	DefaultTCPReadTimeout        = 2 * time.Second
	DefaultTCPIdleTimeout        = 3 * time.Second
	DefaultTTL                   = 600
	maxUpstreams                 = 3
	// udpBufSize is the largest UDP query read and the largest UDP answer
	// sent, whatever EDNS0 size the client advertises.
	udpBufSize = 4096
)

// Config of the resolver. Every limit is enforced per sandbox and across
// all sandboxes, so that one sandbox cannot use up what the others need.
type Config struct {
	Upstreams   []netip.AddrPort // at most 3 used; port 53 unless given
	Timeout     time.Duration    // per upstream try, default 2s
	MaxInFlight int              // forwarded queries in flight across all sandboxes, default 1024; beyond: REFUSED
	// MaxInFlightPerSandbox bounds one sandbox's forwarded queries in
	// flight, default 64; beyond: REFUSED at once.
	MaxInFlightPerSandbox int
	// MaxTCPConns and MaxTCPConnsPerSandbox bound the TCP connections the
	// daemon holds open to 127.0.0.11:53 (defaults 1024 and 32); a
	// connection beyond either is accepted and reset at once.
	MaxTCPConns           int
	MaxTCPConnsPerSandbox int
	// TCPReadTimeout bounds the wait for a connection's first query (and
	// for each query, however slowly its bytes come); TCPIdleTimeout the
	// wait for each further query. Defaults 2s and 3s.
	TCPReadTimeout time.Duration
	TCPIdleTimeout time.Duration
	TTL            uint32 // of local answers, default 600 (Docker's)
	Logger         *slog.Logger
}

// Policy is what the resolver may do for one sandbox beyond answering its
// local names.
type Policy struct {
	// Forward: names not known locally are sent to the upstreams. False
	// for a sandbox with no way out (only --internal networks): its
	// external names get SERVFAIL and no packet leaves the host for them
	// (CVE-2024-29018).
	Forward bool
}

func (c Config) withDefaults() Config {
	ups := make([]netip.AddrPort, 0, maxUpstreams)
	for _, u := range c.Upstreams {
		if len(ups) == maxUpstreams {
			break
		}
		if !u.Addr().IsValid() {
			continue
		}
		if u.Port() == 0 {
			u = netip.AddrPortFrom(u.Addr(), 53)
		}
		ups = append(ups, u)
	}
	c.Upstreams = ups
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	c.MaxInFlight = orDefault(c.MaxInFlight, DefaultMaxInFlight)
	c.MaxInFlightPerSandbox = orDefault(c.MaxInFlightPerSandbox, DefaultMaxInFlightPerSandbox)
	c.MaxTCPConns = orDefault(c.MaxTCPConns, DefaultMaxTCPConns)
	c.MaxTCPConnsPerSandbox = orDefault(c.MaxTCPConnsPerSandbox, DefaultMaxTCPConnsPerSandbox)
	c.TCPReadTimeout = orDefault(c.TCPReadTimeout, DefaultTCPReadTimeout)
	c.TCPIdleTimeout = orDefault(c.TCPIdleTimeout, DefaultTCPIdleTimeout)
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Resolver serves every sandbox from one process: per sandbox a UDP and a
// TCP socket on 127.0.0.11:53 opened inside the sandbox's network namespace
// and served by a few event loops shared by all sandboxes. Local names come from the Table,
// scoped to the asking sandbox; the rest is forwarded to the upstreams from
// the daemon's namespace, for sandboxes whose Policy allows it.
type Resolver struct {
	table    *Table
	cfg      Config
	log      *slog.Logger
	inFlight chan struct{} // semaphore of forwarded queries, all sandboxes
	tcpConns atomic.Int64  // TCP connections held, all sandboxes

	nextKey atomic.Uint32 // of the loops' sockets

	mu        sync.Mutex
	sandboxes map[string]*served
	loops     []*loop // started with the first sandbox
	nextLoop  int
	numLoops  int // 0: min(GOMAXPROCS, maxLoops); set by tests
}

// client is the resolver's state for one sandbox: its policy and what it
// holds now (forwarded queries in flight, TCP connections open).
type client struct {
	id   string
	host bool // not a sandbox: names answered host-wide (ServeUpstream)
	// allow, when set, says which source addresses may ask at all
	// (ServeUpstream on a routable address); others get REFUSED.
	allow    func(netip.Addr) bool
	forward  atomic.Bool
	inFlight atomic.Int64
	tcpConns atomic.Int64
}

func newClient(id string, p Policy) *client {
	c := &client{id: id}
	c.forward.Store(p.Forward)
	return c
}

// NewResolver returns a resolver answering from t; it serves nothing until
// Start.
func NewResolver(t *Table, c Config) *Resolver {
	c = c.withDefaults()
	return &Resolver{
		table:     t,
		cfg:       c,
		log:       c.Logger,
		inFlight:  make(chan struct{}, c.MaxInFlight),
		sandboxes: map[string]*served{},
	}
}

// Start begins serving sandbox sandboxID whose network namespace file is
// nsPath, under policy p: it brings lo up there if needed and listens on
// 127.0.0.11:53 UDP and TCP inside it. Idempotent: a sandbox already served
// on the same path keeps its sockets and takes the new policy at once (the
// next query sees it); on another path it is restarted there.
func (r *Resolver) Start(sandboxID, nsPath string, p Policy) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l, ok := r.sandboxes[sandboxID]; ok {
		if l.nsPath == nsPath {
			l.client.forward.Store(p.Forward)
			return nil
		}
		l.close()
		delete(r.sandboxes, sandboxID)
	}
	l, err := r.listen(nsPath, newClient(sandboxID, p))
	if err != nil {
		return err
	}
	r.sandboxes[sandboxID] = l
	return nil
}

// Stop stops serving a sandbox (closes its sockets). Idempotent.
func (r *Resolver) Stop(sandboxID string) {
	r.mu.Lock()
	l := r.sandboxes[sandboxID]
	delete(r.sandboxes, sandboxID)
	r.mu.Unlock()
	if l != nil {
		l.close()
	}
}

// Close stops serving every sandbox.
func (r *Resolver) Close() {
	r.mu.Lock()
	ls := r.sandboxes
	r.sandboxes = map[string]*served{}
	r.mu.Unlock()
	for _, l := range ls {
		l.close()
	}
	r.mu.Lock()
	r.closeLoopsLocked()
	r.mu.Unlock()
}

// limit wraps sandbox c's TCP listener in its connection limits.
func (r *Resolver) limit(ln net.Listener, c *client) net.Listener {
	return &limitListener{Listener: ln, sandbox: &c.tcpConns, all: &r.tcpConns, maxSandbox: r.cfg.MaxTCPConnsPerSandbox,
		maxAll: r.cfg.MaxTCPConns, log: r.log, id: c.id, sleep: time.Sleep}
}

// handler answers the queries of sandbox c.
func (r *Resolver) handler(c *client) mdns.Handler {
	return mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) { r.serve(c, w, req) })
}

func (r *Resolver) serve(c *client, w mdns.ResponseWriter, req *mdns.Msg) {
	tcp := isTCP(w)
	var resp *mdns.Msg
	if c.allow != nil && !c.allow(sourceAddr(w)) {
		r.log.Debug("dns: refused a query from a source not allowed", "server", c.id, "source", w.RemoteAddr().String())
		resp = refused(req)
		observeQuery(queryStart(), resp, false)
	} else {
		resp = r.answer(c, req, tcp)
	}
	if resp == nil {
		return
	}
	resp.Id = req.Id
	if !tcp {
		truncate(resp, req)
	}
	if err := w.WriteMsg(resp); err != nil {
		r.log.Debug("dns: write answer", "sandbox", c.id, "err", err)
	}
}

// answer builds the reply to req: local if the name is known to c,
// forwarded if c's policy allows it, SERVFAIL otherwise (what Docker 26+
// answers on an internal network: nothing is sent anywhere).
func (r *Resolver) answer(c *client, req *mdns.Msg, tcp bool) *mdns.Msg {
	t0 := queryStart()
	resp, fwd := r.decide(c, req)
	if !fwd {
		observeQuery(t0, resp, false)
		return resp
	}
	release, refusal := r.admitForward(c, req)
	if refusal != nil {
		observeQuery(t0, refusal, false)
		return refusal
	}
	defer release()
	resp = r.exchange(c, req, tcp)
	observeQuery(t0, resp, true)
	return resp
}

// decide answers req without sending anything (FORMERR, a local answer,
// SERVFAIL when c may not forward or no upstream is configured), or says
// that it must be forwarded.
func (r *Resolver) decide(c *client, req *mdns.Msg) (resp *mdns.Msg, forward bool) {
	if len(req.Question) != 1 || req.Opcode != mdns.OpcodeQuery {
		return new(mdns.Msg).SetRcode(req, mdns.RcodeFormatError), false
	}
	q := req.Question[0]
	if q.Qclass == mdns.ClassINET {
		if resp := r.local(c, req, q); resp != nil {
			return resp, false
		}
	}
	if !c.forward.Load() || len(r.cfg.Upstreams) == 0 {
		return servfail(req), false
	}
	return nil, true
}

// local answers from the table as c sees it, or returns nil when the name
// is not local.
func (r *Resolver) local(c *client, req *mdns.Msg, q mdns.Question) *mdns.Msg {
	if q.Qtype == mdns.TypePTR {
		addr, ok := parseReverse(q.Name)
		if !ok {
			return nil
		}
		name, ok := r.reverse(c, addr)
		if !ok {
			return nil
		}
		resp := reply(req)
		resp.Answer = []mdns.RR{&mdns.PTR{Hdr: r.hdr(q, mdns.TypePTR), Ptr: mdns.Fqdn(name)}}
		return resp
	}
	addrs, known := r.lookup(c, q.Name)
	if !known {
		return nil
	}
	// MX, TXT, ... of a local name, and A (AAAA) of a name with no IPv4
	// (IPv6) address: empty NOERROR (NODATA), never forwarded.
	resp := reply(req)
	for _, a := range addrs {
		switch {
		case q.Qtype == mdns.TypeA && a.Is4():
			resp.Answer = append(resp.Answer, &mdns.A{Hdr: r.hdr(q, mdns.TypeA), A: a.AsSlice()})
		case q.Qtype == mdns.TypeAAAA && a.Is6() && !a.Is4In6():
			resp.Answer = append(resp.Answer, &mdns.AAAA{Hdr: r.hdr(q, mdns.TypeAAAA), AAAA: a.AsSlice()})
		}
	}
	return resp
}

func (r *Resolver) hdr(q mdns.Question, t uint16) mdns.RR_Header {
	return mdns.RR_Header{Name: q.Name, Rrtype: t, Class: mdns.ClassINET, Ttl: r.cfg.TTL}
}

func reply(req *mdns.Msg) *mdns.Msg {
	resp := new(mdns.Msg).SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = true
	resp.Compress = true
	return resp
}

// admitForward takes one of c's forwarding slots and one of all
// sandboxes'; release gives them back. When c already has
// MaxInFlightPerSandbox forwarded queries in flight or all sandboxes
// together MaxInFlight, it returns REFUSED for req instead (as Docker
// answers at its limit), and nothing may be sent.
func (r *Resolver) admitForward(cl *client, req *mdns.Msg) (release func(), refusal *mdns.Msg) {
	if !acquire(&cl.inFlight, r.cfg.MaxInFlightPerSandbox) {
		r.log.Debug("dns: per-sandbox forward limit reached", "sandbox", cl.id, "limit", r.cfg.MaxInFlightPerSandbox)
		return nil, refused(req)
	}
	select {
	case r.inFlight <- struct{}{}:
		return func() { <-r.inFlight; cl.inFlight.Add(-1) }, nil
	default:
		cl.inFlight.Add(-1)
		r.log.Debug("dns: forward limit reached", "sandbox", cl.id, "limit", r.cfg.MaxInFlight)
		return nil, refused(req)
	}
}

// exchange sends req to the upstreams in order, over the client's
// protocol, each try bounded by the timeout; the first answer that is not
// SERVFAIL or REFUSED is returned, else the last such answer, else
// SERVFAIL. The caller holds a forwarding slot (admitForward).
func (r *Resolver) exchange(cl *client, req *mdns.Msg, tcp bool) *mdns.Msg {
	src := cl.id
	c := &mdns.Client{Net: "udp", Timeout: r.cfg.Timeout, UDPSize: udpBufSize}
	if tcp {
		c.Net = "tcp"
	}
	var last *mdns.Msg
	for _, up := range r.cfg.Upstreams {
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
		resp, _, err := c.ExchangeContext(ctx, req, up.String())
		cancel()
		if err != nil {
			r.log.Debug("dns: upstream failed", "sandbox", src, "upstream", up, "err", err)
			continue
		}
		if resp.Rcode == mdns.RcodeServerFailure || resp.Rcode == mdns.RcodeRefused {
			last = resp
			continue
		}
		return resp
	}
	if last != nil {
		return last
	}
	return servfail(req)
}

func servfail(req *mdns.Msg) *mdns.Msg {
	resp := new(mdns.Msg).SetRcode(req, mdns.RcodeServerFailure)
	resp.RecursionAvailable = true
	return resp
}

func refused(req *mdns.Msg) *mdns.Msg {
	resp := new(mdns.Msg).SetRcode(req, mdns.RcodeRefused)
	resp.RecursionAvailable = true
	return resp
}

// acquire takes one of max slots counted by n; false when all are taken.
func acquire(n *atomic.Int64, max int) bool {
	if n.Add(1) > int64(max) {
		n.Add(-1)
		return false
	}
	return true
}

// truncate fits a UDP answer into the size the client accepts (512 bytes,
// or its EDNS0 size up to udpBufSize), setting TC when records are dropped
// so the client retries over TCP.
func truncate(resp, req *mdns.Msg) {
	size := mdns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = min(max(int(opt.UDPSize()), mdns.MinMsgSize), udpBufSize)
		if resp.IsEdns0() == nil {
			resp.SetEdns0(uint16(size), false)
		}
	}
	if resp.Len() > size {
		resp.Truncate(size)
	}
}

func isTCP(w mdns.ResponseWriter) bool {
	_, ok := w.LocalAddr().(*net.TCPAddr)
	return ok
}

// parseReverse turns "4.3.2.1.in-addr.arpa." into 1.2.3.4 and an
// ip6.arpa name of 32 nibbles ("1.0.0.0...8.b.d.0.1.0.0.2.ip6.arpa.") into
// its IPv6 address. Anything else, including a shorter ip6.arpa name (a
// zone, not an address), is not an address.
func parseReverse(name string) (netip.Addr, bool) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		return parseReverse6(rest)
	}
	rest, ok := strings.CutSuffix(name, ".in-addr.arpa")
	if !ok {
		return netip.Addr{}, false
	}
	labels := strings.Split(rest, ".")
	if len(labels) != 4 {
		return netip.Addr{}, false
	}
	var b [4]byte
	for i, l := range labels {
		n, err := strconv.ParseUint(l, 10, 8)
		if err != nil {
			return netip.Addr{}, false
		}
		b[3-i] = byte(n)
	}
	return netip.AddrFrom4(b), true
}

// parseReverse6 reads the 32 nibble labels before ".ip6.arpa", least
// significant first.
func parseReverse6(rest string) (netip.Addr, bool) {
	labels := strings.Split(rest, ".")
	if len(labels) != 32 {
		return netip.Addr{}, false
	}
	var b [16]byte
	for i, l := range labels {
		if len(l) != 1 {
			return netip.Addr{}, false
		}
		n, err := strconv.ParseUint(l, 16, 8)
		if err != nil {
			return netip.Addr{}, false
		}
		pos := 31 - i // nibble index, most significant first
		b[pos/2] |= byte(n) << (4 * (1 - pos%2))
	}
	return netip.AddrFrom16(b), true
}

// sourceAddr is the address a query came from (IPv4-mapped unmapped).
func sourceAddr(w mdns.ResponseWriter) netip.Addr {
	if ap, err := netip.ParseAddrPort(w.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
