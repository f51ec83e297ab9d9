package dns

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// Defaults of Config.
const (
	DefaultTimeout     = 2 * time.Second
	DefaultMaxInFlight = 256
	DefaultTTL         = 600
	maxUpstreams       = 3
	// udpBufSize is the largest UDP query read and the largest UDP answer
	// sent, whatever EDNS0 size the client advertises.
	udpBufSize = 4096
)

// Config of the resolver.
type Config struct {
	Upstreams   []netip.AddrPort // at most 3 used; port 53 unless given
	Timeout     time.Duration    // per upstream try, default 2s
	MaxInFlight int              // forwarded queries in flight across all sandboxes, default 256; beyond: SERVFAIL
	TTL         uint32           // of local answers, default 600 (Docker's)
	Logger      *slog.Logger
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
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Resolver serves every sandbox from one process: per sandbox a UDP and a
// TCP socket on 127.0.0.11:53 opened inside the sandbox's network namespace
// and served by goroutines of the daemon. Local names come from the Table,
// scoped to the asking sandbox; the rest is forwarded to the upstreams from
// the daemon's namespace.
type Resolver struct {
	table    *Table
	cfg      Config
	log      *slog.Logger
	inFlight chan struct{} // semaphore of forwarded queries

	mu        sync.Mutex
	sandboxes map[string]*listener
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
		sandboxes: map[string]*listener{},
	}
}

// Start begins serving sandbox sandboxID whose network namespace file is
// nsPath: it brings lo up there if needed and listens on 127.0.0.11:53 UDP
// and TCP inside it. Idempotent: a sandbox already served on the same path
// is left alone; on another path it is restarted there.
func (r *Resolver) Start(sandboxID, nsPath string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l, ok := r.sandboxes[sandboxID]; ok {
		if l.nsPath == nsPath {
			return nil
		}
		l.close()
		delete(r.sandboxes, sandboxID)
	}
	l, err := listen(nsPath, r.handler(sandboxID))
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
	r.sandboxes = map[string]*listener{}
	r.mu.Unlock()
	for _, l := range ls {
		l.close()
	}
}

// handler answers the queries of sandbox src.
func (r *Resolver) handler(src string) mdns.Handler {
	return mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) { r.serve(src, w, req) })
}

func (r *Resolver) serve(src string, w mdns.ResponseWriter, req *mdns.Msg) {
	tcp := isTCP(w)
	resp := r.answer(src, req, tcp)
	if resp == nil {
		return
	}
	resp.Id = req.Id
	if !tcp {
		truncate(resp, req)
	}
	if err := w.WriteMsg(resp); err != nil {
		r.log.Debug("dns: write answer", "sandbox", src, "err", err)
	}
}

// answer builds the reply to req: local if the name is known to src,
// forwarded otherwise.
func (r *Resolver) answer(src string, req *mdns.Msg, tcp bool) *mdns.Msg {
	if len(req.Question) != 1 || req.Opcode != mdns.OpcodeQuery {
		return new(mdns.Msg).SetRcode(req, mdns.RcodeFormatError)
	}
	q := req.Question[0]
	if q.Qclass == mdns.ClassINET {
		if resp := r.local(src, req, q); resp != nil {
			return resp
		}
	}
	return r.forward(src, req, tcp)
}

// local answers from the table, or returns nil when the name is not local.
func (r *Resolver) local(src string, req *mdns.Msg, q mdns.Question) *mdns.Msg {
	if q.Qtype == mdns.TypePTR {
		addr, ok := parseReverse(q.Name)
		if !ok {
			return nil
		}
		name, ok := r.table.Reverse(src, addr)
		if !ok {
			return nil
		}
		resp := reply(req)
		resp.Answer = []mdns.RR{&mdns.PTR{Hdr: r.hdr(q, mdns.TypePTR), Ptr: mdns.Fqdn(name)}}
		return resp
	}
	addrs, known := r.table.Lookup(src, q.Name)
	if !known {
		return nil
	}
	resp := reply(req) // AAAA, MX, TXT, ... of a local name: empty NOERROR
	if q.Qtype == mdns.TypeA {
		for _, a := range addrs {
			if a.Is4() {
				resp.Answer = append(resp.Answer, &mdns.A{Hdr: r.hdr(q, mdns.TypeA), A: a.AsSlice()})
			}
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

// forward sends req to the upstreams in order, over the client's protocol,
// each try bounded by the timeout; the first answer that is not SERVFAIL or
// REFUSED is returned. SERVFAIL when no upstream is configured, all fail, or
// MaxInFlight forwarded queries are already in flight.
func (r *Resolver) forward(src string, req *mdns.Msg, tcp bool) *mdns.Msg {
	if len(r.cfg.Upstreams) == 0 {
		return servfail(req)
	}
	select {
	case r.inFlight <- struct{}{}:
		defer func() { <-r.inFlight }()
	default:
		r.log.Debug("dns: forward limit reached", "sandbox", src, "limit", r.cfg.MaxInFlight)
		return servfail(req)
	}
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

// parseReverse turns "4.3.2.1.in-addr.arpa." into 1.2.3.4.
func parseReverse(name string) (netip.Addr, bool) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
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
