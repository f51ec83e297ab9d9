// Package zk is the ZooKeeper store.Store: the etcd-shaped interface
// (revisions, compare-and-swap, leases, prefix watch with replay) mapped
// onto a ZooKeeper ensemble through github.com/go-zookeeper/zk.
//
// Layout, under the root znode /<prefix> (default /tether):
//
//	rev                 data: the change counter N; its version is the write lock
//	kv/<key>            one znode per key (flat): lease ID + value; Mzxid = KV.Revision
//	log/<counter>       change log: the ops of write N (counter zero-padded to 20
//	                    digits); Czxid = the write's revision. The last History
//	                    entries are kept; log's data says up to where it was trimmed
//	alive/<lease>       ephemeral, owned by the lease's own ZooKeeper session
//	leases/<lease>/<key> the lease's keys (an index, for expiry)
//
// Keys are escaped into one znode name each ('/' and anything outside
// [A-Za-z0-9._~:@+=,-] as %XX), so arbitrary key strings work and List is
// one getChildren of kv/ filtered by the raw prefix and sorted bytewise.
//
// Why this shape: ZooKeeper has a global, monotonic zxid (the store
// revision: a key's Mzxid, a write's zxid, shared by every op of one multi)
// but no history, no per-key compare on zxids and one-shot watches. So
// every write is one multi that (1) sets rev from version v, the version
// read before the keys were read: the multi fails if any other write came
// in between, which makes every compare (Create, CAS, Txn) atomic against
// the reads it was decided on, without ABA on recreated znodes; (2) writes
// the keys and the lease index; (3) appends log/<N+1> holding the ops. The
// revision is the Mzxid setData(rev) returns. Watch reads the log in counter
// order (dense: no gaps), so replay, order and exactly-once delivery follow
// from the counter, across reconnects and server restarts. A lease is a
// ZooKeeper session that owns alive/<lease>; the keys written with it are
// ordinary znodes, and expiry is a logged write like any other (the
// lease's keys deleted in one multi at one revision) made by the first
// Store that sees the marker gone, so delete events need no guessing of the
// zxid at which an ephemeral vanished.
package zk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gozk "github.com/go-zookeeper/zk"

	"github.com/tether-net/tether/internal/store"
)

var (
	// ErrUnreachable: no server answered within the request (or dial)
	// timeout; see store.ErrUnreachable.
	ErrUnreachable = store.ErrUnreachable
	// ErrClosed: the store was closed.
	ErrClosed = store.ErrClosed
)

// Defaults of Config.
const (
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultSessionTimeout = 10 * time.Second
	DefaultWatchBuffer    = 1024
	DefaultHistory        = 1000
	DefaultPrefix         = "tether"
)

// Config says how to reach the ensemble. Only Servers is required.
type Config struct {
	// Servers are the ensemble's client addresses, "host:port". List every
	// server: the client tries them in turn and fails over.
	Servers []string
	// Prefix is the root znode, without slashes at the ends ("tether",
	// "tether/prod"); "" means DefaultPrefix.
	Prefix string

	// DialTimeout bounds Open's first contact (default 5s).
	DialTimeout time.Duration
	// RequestTimeout bounds every call on top of the caller's context
	// (default 5s).
	RequestTimeout time.Duration
	// SessionTimeout is asked for the store's own session (default 10s;
	// the server clamps it to 2-20 ticks): watches survive a disconnection
	// shorter than that without being re-armed.
	SessionTimeout time.Duration
	// WatchBuffer is each watcher's queue (default 1024 events); a watcher
	// that falls that far behind has its channel closed.
	WatchBuffer int
	// History is how many writes the change log keeps for Watch replay
	// (default 1000); an older afterRev fails with store.ErrCompacted.
	History int

	// DialContext, if set, opens the connections (tests dial inside a
	// network namespace with it). addr is "host:port".
	DialContext func(ctx context.Context, addr string) (net.Conn, error)
	// Logger receives background events; default slog.Default().
	Logger *slog.Logger
}

// Store is the ZooKeeper-backed store.Store. All methods are safe for
// concurrent use.
type Store struct {
	cfg  Config
	root string // "/tether"
	log  *slog.Logger
	conn *gozk.Conn
	dial *dialer

	// wlock serialises this Store's writes: they all contend for rev's
	// version, so running them one at a time saves failed multis.
	wlock chan struct{}
	// revMu guards the cached counter and version of rev.
	revMu  sync.Mutex
	revOK  bool
	revN   int64
	revVer int32
	// known is the state of the keys this Store's own writes read and
	// wrote since rev was last read from the server (nil: nothing known;
	// absent keys as KV{}). While revVer is this Store's own last write,
	// it is the keys' current state; a write decided on it is checked by
	// the multi's version check on rev like any other (write.go: known).
	known map[string]knownKey

	leaseMu sync.Mutex
	leases  map[store.LeaseID]*lease
	// ended are the leases this Store granted and ended (their ttl ran
	// out, or they were revoked): KeepAlive reports them not found, even
	// while the server has not expired their session yet.
	ended map[store.LeaseID]bool

	reap chan struct{} // wakes the reaper

	closed    atomic.Bool
	done      chan struct{} // closed by Close
	bg        context.Context
	bgCancel  context.CancelFunc
	closeOnce sync.Once
	mu        sync.Mutex // orders Close after wg.Add
	wg        sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// Open connects to the ensemble, waits (at most DialTimeout) for a session,
// creates the layout under the prefix if it is missing, and starts the
// lease reaper. The error wraps ErrUnreachable when no server answered.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Store{
		cfg: cfg, root: "/" + cfg.Prefix, log: cfg.Logger,
		wlock: make(chan struct{}, 1), leases: map[store.LeaseID]*lease{},
		reap: make(chan struct{}, 1), done: make(chan struct{}),
	}
	s.bg, s.bgCancel = context.WithCancel(context.Background())
	s.dial = newDialer(cfg)
	ready := make(chan struct{})
	var once sync.Once
	s.conn, err = s.connect(cfg.SessionTimeout, s.dial, func(ev gozk.Event) {
		if ev.Type == gozk.EventSession && ev.State == gozk.StateHasSession {
			once.Do(func() { close(ready) })
		}
	})
	if err != nil {
		return nil, fmt.Errorf("open zookeeper store %s: %w", cfg.where(), err)
	}
	fail := func(err error) (*Store, error) {
		s.bgCancel()
		s.conn.Close()
		return nil, fmt.Errorf("open zookeeper store %s: %w", cfg.where(), err)
	}
	if err := s.awaitSession(ctx, ready, cfg.DialTimeout); err != nil {
		return fail(err)
	}
	if err := s.call(ctx, "create layout", s.ensureLayout); err != nil {
		return fail(err)
	}
	s.goBackground(s.reaper)
	return s, nil
}

// connect starts a client (it connects in the background).
func (s *Store) connect(timeout time.Duration, d *dialer, cb gozk.EventCallback) (*gozk.Conn, error) {
	conn, _, err := gozk.Connect(s.cfg.Servers, timeout,
		gozk.WithHostProvider(&hostList{}),
		gozk.WithDialer(d.dial),
		gozk.WithLogger(zkLogger{s.log}),
		gozk.WithLogInfo(false),
		gozk.WithEventCallback(cb))
	return conn, err
}

// awaitSession waits until ready is closed, at most limit.
func (s *Store) awaitSession(ctx context.Context, ready <-chan struct{}, limit time.Duration) error {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("%w: no session within %v%s", ErrUnreachable, limit, s.dial.reason())
	}
}

func (c Config) withDefaults() (Config, error) {
	if len(c.Servers) == 0 {
		return c, errors.New("open zookeeper store: no servers")
	}
	for _, srv := range c.Servers {
		if _, _, err := net.SplitHostPort(srv); err != nil {
			return c, fmt.Errorf("open zookeeper store: server %q: %v", srv, err)
		}
	}
	c.Prefix = strings.Trim(c.Prefix, "/")
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if err := checkPrefix(c.Prefix); err != nil {
		return c, fmt.Errorf("open zookeeper store: %w", err)
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.WatchBuffer <= 0 {
		c.WatchBuffer = DefaultWatchBuffer
	}
	if c.History <= 0 {
		c.History = DefaultHistory
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// where names the ensemble in errors.
func (c Config) where() string { return "at " + strings.Join(c.Servers, ",") }

// ensureLayout creates the root and its directories (racing Opens are
// fine: an existing znode is kept as it is).
func (s *Store) ensureLayout(ctx context.Context) error {
	var path string
	for seg := range strings.SplitSeq(s.cfg.Prefix, "/") {
		path += "/" + seg
		if err := s.createIfMissing(ctx, path, nil); err != nil {
			return err
		}
	}
	for _, n := range []struct {
		path string
		data []byte
	}{
		{s.revPath(), []byte("0")},
		{s.root + "/kv", nil},
		{s.logDir(), []byte("0 0")},
		{s.root + "/alive", nil},
		{s.root + "/leases", nil},
	} {
		if err := s.createIfMissing(ctx, n.path, n.data); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) createIfMissing(ctx context.Context, path string, data []byte) error {
	return s.run(ctx, func() error {
		_, err := s.conn.Create(path, data, 0, acl)
		if errors.Is(err, gozk.ErrNodeExists) {
			return nil
		}
		return err
	})
}

// Connected is store.Connectivity: nil while the client holds its session,
// else ErrUnreachable. A killed or cut-off server is seen when the
// client's connection drops (at once), not after the session's timeout.
func (s *Store) Connected() error {
	if st := s.conn.State(); st != gozk.StateHasSession {
		return fmt.Errorf("zookeeper %s: %s: %w", s.cfg.where(), strings.ToLower(strings.TrimPrefix(st.String(), "State")), store.ErrUnreachable)
	}
	return nil
}

var _ store.Connectivity = (*Store)(nil)

// Close ends the store: watch channels are closed, background work stops,
// later calls fail with ErrClosed. Leases this store granted are not
// revoked: their sessions are dropped without a goodbye, so the server
// expires them after their TTL and another Store deletes their keys (as
// etcd leases outlive a closed client until their TTL runs out).
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed.Store(true)
		close(s.done)
		s.mu.Unlock()
		s.bgCancel()
		s.leaseMu.Lock()
		var drops sync.WaitGroup
		for _, l := range s.leases {
			drops.Go(l.drop)
		}
		s.leaseMu.Unlock()
		drops.Wait()
		s.wg.Wait()
		s.conn.Close()
	})
	return nil
}

// goBackground runs fn until the store closes (fn watches s.bg).
func (s *Store) goBackground(fn func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return false
	}
	s.wg.Go(fn)
	return true
}

// call runs fn under the request timeout and maps its error, naming op.
func (s *Store) call(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	if s.closed.Load() {
		return fmt.Errorf("%s: %w", op, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	if err := fn(rctx); err != nil {
		return s.mapErr(ctx, op, err)
	}
	return nil
}

// run makes one blocking client request bounded by ctx. The client has no
// contexts: on timeout the request is abandoned (the client fails it when
// the connection is given up, within about a second of a dead server).
func (s *Store) run(ctx context.Context, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return ErrClosed
	}
}

// errStore marks errors already in the store's vocabulary.
type errStore struct{ err error }

func (e errStore) Error() string { return e.err.Error() }
func (e errStore) Unwrap() error { return e.err }

// mapErr turns a client error into the store's vocabulary. ctx is the
// caller's context (not the one with the request timeout).
func (s *Store) mapErr(ctx context.Context, op string, err error) error {
	var se errStore
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("%s: %w", op, se.err)
	case s.closed.Load() || errors.Is(err, ErrClosed):
		return fmt.Errorf("%s: %w", op, ErrClosed)
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", op, ctx.Err())
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w: zookeeper %s gave no answer within %v%s: %w",
			op, ErrUnreachable, s.cfg.where(), s.cfg.RequestTimeout, s.dial.reason(), err)
	case lost(err):
		// Connection lost during the call: a write may or may not have
		// been applied.
		return fmt.Errorf("%s: %w: zookeeper %s: %w%s", op, ErrUnreachable, s.cfg.where(), err, s.dial.reason())
	default:
		return fmt.Errorf("%s: zookeeper: %w", op, err)
	}
}

// lost reports client errors that mean "no server could serve this now":
// the client's own, and the socket errors it passes through when the
// server dies under a call (reset, EOF, broken pipe).
func lost(err error) bool {
	for _, e := range []error{gozk.ErrNoServer, gozk.ErrConnectionClosed, gozk.ErrSessionExpired,
		gozk.ErrClosing, gozk.ErrSessionMoved, io.EOF, io.ErrUnexpectedEOF, net.ErrClosed,
		syscall.ECONNRESET, syscall.ECONNREFUSED, syscall.EPIPE} {
		if errors.Is(err, e) {
			return true
		}
	}
	var op *net.OpError
	return errors.As(err, &op)
}

// backoff sleeps a short random while (retry after a lost race) or until
// ctx ends.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 6)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var acl = gozk.WorldACL(gozk.PermAll)

// dialer opens the connections of one client and remembers why the last
// dial failed (the reason an unreachable store gives). A dropped dialer
// refuses to dial, so a client given up on never reaches the server again.
type dialer struct {
	cfg     Config
	lastErr atomic.Pointer[string]
	mu      sync.Mutex
	dropped bool
	conns   []net.Conn
}

func newDialer(cfg Config) *dialer { return &dialer{cfg: cfg} }

var errDropped = errors.New("connection dropped by the store")

func (d *dialer) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	d.mu.Lock()
	dropped := d.dropped
	d.mu.Unlock()
	if dropped {
		return nil, errDropped
	}
	var c net.Conn
	var err error
	if d.cfg.DialContext != nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		c, err = d.cfg.DialContext(ctx, addr)
		cancel()
	} else {
		c, err = net.DialTimeout(network, addr, timeout)
	}
	if err != nil {
		msg := err.Error()
		d.lastErr.Store(&msg)
		return nil, err
	}
	d.lastErr.Store(new(string))
	c = &trackedConn{Conn: c, d: d}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dropped {
		c.Close()
		return nil, errDropped
	}
	if len(d.conns) >= 4 { // the client holds one connection at a time
		d.conns = append([]net.Conn(nil), d.conns[len(d.conns)-3:]...)
	}
	d.conns = append(d.conns, c)
	return c, nil
}

// trackedConn notes why a connection broke (the server died: EOF or
// reset; it hung: read timeout) as the reason calls give until the next
// dial.
type trackedConn struct {
	net.Conn
	d *dialer
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		msg := "connection lost: " + err.Error()
		c.d.lastErr.Store(&msg)
	}
	return n, err
}

// drop closes the connections and refuses new ones: the server sees the
// client vanish (no closeSession), as when a host dies.
func (d *dialer) drop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dropped = true
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

// reason is " (last connection error)" when a dial failed since the last
// success.
func (d *dialer) reason() string {
	if p := d.lastErr.Load(); p != nil && *p != "" {
		return " (" + *p + ")"
	}
	return ""
}

// hostList hands out the configured servers in turn, without resolving
// names up front (the client's default resolves them once, at Connect, so a
// DNS failure at start would be fatal); names are resolved when dialling.
type hostList struct {
	mu         sync.Mutex
	servers    []string
	curr, last int
}

func (h *hostList) Init(servers []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.servers = append([]string(nil), servers...)
	rand.Shuffle(len(h.servers), func(i, j int) { h.servers[i], h.servers[j] = h.servers[j], h.servers[i] })
	h.curr, h.last = -1, -1
	return nil
}

func (h *hostList) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.servers)
}

func (h *hostList) Next() (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.curr = (h.curr + 1) % len(h.servers)
	retryStart := h.curr == h.last
	if h.last == -1 {
		h.last = 0
	}
	return h.servers[h.curr], retryStart
}

func (h *hostList) Connected() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = h.curr
}

// zkLogger sends the client's messages (connection attempts, reconnects)
// to slog at debug level.
type zkLogger struct{ l *slog.Logger }

func (z zkLogger) Printf(format string, args ...any) {
	z.l.Debug("zookeeper client: " + fmt.Sprintf(format, args...))
}
