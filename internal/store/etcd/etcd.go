// Package etcd is the distributed store.Store: an etcd v3 cluster reached
// through go.etcd.io/etcd/client/v3, for state several Tether hosts share
// (overlay networks, cluster-wide address claims, node records).
//
// Mapping (every key lives under Config.Prefix, which the store adds and
// strips, so two daemons with different prefixes never see each other):
//
//	store revision   = etcd ModRevision (one cluster-wide counter)
//	Create           = Txn(If CreateRevision(k) == 0, Then Put)
//	CompareAndSwap   = Txn(If ModRevision(k) == prev && Version(k) > 0, Then Put, Else Get)
//	Txn Cmp{rev: 0}  = CreateRevision(k) == 0 (absent); otherwise ModRevision(k) == rev
//	Watch(afterRev)  = Watch(WithPrefix, WithRev(afterRev+1), WithCreatedNotify)
//	leases           = etcd leases: TTLs in whole seconds, rounded up
//
// Why this shape: etcd already has the semantics the interface was cut
// after, so every call is one round trip (one raft commit for writes) and
// nothing is emulated client-side. Every call is bounded by
// Config.RequestTimeout on top of the caller's context, so an unreachable
// cluster fails calls with ErrUnreachable instead of hanging them, and the
// same client recovers by itself when a member answers again. Watches
// survive a member restart (the client resumes them from the last
// delivered revision, without duplicates) and are closed only when they
// cannot be resumed: history compacted, the member lost its leader for
// several election timeouts, the watcher's queue overflowed, ctx ended or
// the store closed.
package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

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
	DefaultWatchBuffer    = 1024
	// reconnectMax caps the wait between reconnect attempts to a member.
	reconnectMax = 2 * time.Second
	// listPage is how many keys one List range request fetches.
	listPage = 1000
)

// Config says how to reach the cluster. Only Endpoints is required.
type Config struct {
	// Endpoints are the members' client addresses: "host:port",
	// "https://host:port", "http://host:port" (never TLS) or "unix:///path".
	// List every member: the client spreads calls over them and fails over.
	Endpoints []string
	// Prefix is prepended to every key (e.g. "tether/"); "" uses the raw
	// key space.
	Prefix string

	// TLS, when set, is used as is. Otherwise CACertFile, CertFile and
	// KeyFile (PEM) build one: CA alone verifies the server, Cert+Key add a
	// client certificate (etcd --client-cert-auth).
	TLS                           *tls.Config
	CACertFile, CertFile, KeyFile string

	// Username and Password log in when the cluster has auth enabled.
	Username, Password string

	// DialTimeout bounds Open's first contact (default 5s).
	DialTimeout time.Duration
	// RequestTimeout bounds every call on top of the caller's context
	// (default 5s); Watch waits at most this long for the watch to be
	// registered.
	RequestTimeout time.Duration
	// WatchBuffer is each watcher's queue (default 1024 events); a watcher
	// that falls that far behind has its channel closed.
	WatchBuffer int

	// DialContext, if set, opens the connections (tests dial inside a
	// network namespace with it). addr is "host:port".
	DialContext func(ctx context.Context, addr string) (net.Conn, error)
	// Logger receives background events (watches dropped); default slog.Default().
	Logger *slog.Logger
}

// Store is the etcd-backed store.Store. All methods are safe for concurrent use.
type Store struct {
	cfg    Config
	client *clientv3.Client
	log    *slog.Logger

	// connErr is the last connection failure gRPC reported ("connection
	// refused", "authentication handshake failed: ..."), "" once a call
	// went through: the reason an unreachable store gives.
	connErr atomic.Pointer[string]

	ka keepAliveStream // the lease renewals' stream (lease.go)

	mu        sync.Mutex // orders Close after watchers.Add
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	watchers  sync.WaitGroup
}

var (
	_ store.Store        = (*Store)(nil)
	_ store.Connectivity = (*Store)(nil)
)

// Open connects to the cluster and checks it answers (a linearizable read,
// so a cluster without quorum fails too) within the dial timeout; the error
// then wraps ErrUnreachable. TLS files are read here.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, log: cfg.Logger}
	ccfg, err := s.clientConfig()
	if err != nil {
		return nil, err
	}
	if s.client, err = clientv3.New(ccfg); err != nil { // logs in when Username is set
		return nil, fmt.Errorf("open etcd store %s: %w", cfg.where(), s.dialErr(err))
	}
	if err := s.probe(ctx); err != nil {
		s.client.Close()
		return nil, fmt.Errorf("open etcd store %s: %w", cfg.where(), s.dialErr(err))
	}
	return s, nil
}

// clientConfig is the etcd client's configuration.
func (s *Store) clientConfig() (clientv3.Config, error) {
	tlsCfg, err := s.cfg.tlsConfig()
	if err != nil {
		return clientv3.Config{}, err
	}
	opts := []grpc.DialOption{
		// gRPC's default reconnect backoff grows to 2 minutes: after a
		// long outage the store would stay unusable that long after etcd
		// is back.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: reconnectMax},
			MinConnectTimeout: s.cfg.DialTimeout,
		}),
		grpc.WithChainUnaryInterceptor(s.noteUnary),
		grpc.WithChainStreamInterceptor(s.noteStream),
	}
	if s.cfg.DialContext != nil {
		opts = append(opts, grpc.WithContextDialer(s.cfg.DialContext))
	}
	return clientv3.Config{
		Endpoints:            s.cfg.Endpoints,
		DialTimeout:          s.cfg.DialTimeout,
		DialKeepAliveTime:    10 * time.Second, // etcd refuses pings more often than every 5s
		DialKeepAliveTimeout: 5 * time.Second,
		DialOptions:          opts,
		TLS:                  tlsCfg,
		Username:             s.cfg.Username,
		Password:             s.cfg.Password,
		Logger:               zap.NewNop(),
	}, nil
}

func (c Config) withDefaults() (Config, error) {
	if len(c.Endpoints) == 0 {
		return c, errors.New("open etcd store: no endpoints")
	}
	for _, ep := range c.Endpoints {
		if strings.TrimSpace(ep) == "" {
			return c, fmt.Errorf("open etcd store: empty endpoint in %q", c.Endpoints)
		}
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.WatchBuffer <= 0 {
		c.WatchBuffer = DefaultWatchBuffer
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// tlsConfig returns Config.TLS, or one built from the PEM files, or nil.
func (c Config) tlsConfig() (*tls.Config, error) {
	if c.TLS != nil {
		return c.TLS, nil
	}
	if c.CACertFile == "" && c.CertFile == "" && c.KeyFile == "" {
		return nil, nil
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, fmt.Errorf("etcd TLS: certificate %q and key %q go together", c.CertFile, c.KeyFile)
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CACertFile != "" {
		pem, err := os.ReadFile(c.CACertFile)
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: CA: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd TLS: CA %q holds no PEM certificate", c.CACertFile)
		}
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: client certificate: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

// where names the cluster in errors.
func (c Config) where() string {
	return fmt.Sprintf("at %s", strings.Join(c.Endpoints, ","))
}

// probe reads one key with the dial timeout: the cluster answers, has a
// leader, and our credentials are accepted.
func (s *Store) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	key := s.cfg.Prefix
	if key == "" {
		key = "\x00"
	}
	_, err := s.client.Get(ctx, key, clientv3.WithKeysOnly())
	return err
}

// dialErr marks Open's timeouts and connection failures as ErrUnreachable.
func (s *Store) dialErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || unavailable(err) {
		return fmt.Errorf("%w: no answer within %v%s: %w", ErrUnreachable, s.cfg.DialTimeout, s.reason(), err)
	}
	return err
}

// Close closes the client: every watch channel is closed and later calls
// fail with ErrClosed. Calling it again returns the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed.Store(true)
		s.mu.Unlock()
		s.ka.close()
		if err := s.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
			s.closeErr = fmt.Errorf("close etcd store %s: %w", s.cfg.where(), err)
		}
		s.watchers.Wait()
	})
	return s.closeErr
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

// mapErr turns a client error into the store's vocabulary. ctx is the
// caller's context (not the one with the request timeout).
func (s *Store) mapErr(ctx context.Context, op string, err error) error {
	switch {
	case s.closed.Load():
		return fmt.Errorf("%s: %w", op, ErrClosed)
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", op, ctx.Err())
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return fmt.Errorf("%s: %w", op, store.ErrLeaseNotFound)
	case errors.Is(err, rpctypes.ErrCompacted):
		return fmt.Errorf("%s: %w", op, store.ErrCompacted)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w: etcd %s gave no answer within %v%s: %w",
			op, ErrUnreachable, s.cfg.where(), s.cfg.RequestTimeout, s.reason(), err)
	case unavailable(err):
		// Connection lost during the call, or no leader: a write may or
		// may not have been applied.
		return fmt.Errorf("%s: %w: etcd %s: %w", op, ErrUnreachable, s.cfg.where(), err)
	default:
		return fmt.Errorf("%s: etcd: %w", op, err)
	}
}

// unavailable reports errors that mean "no member could serve this now":
// connection refused or lost, no leader, leader changed, server timeout.
func unavailable(err error) bool {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable || ee.Code() == codes.DeadlineExceeded
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// key is the etcd key of a store key.
func (s *Store) key(k string) string { return s.cfg.Prefix + k }

// rangeOf is the etcd key range [from, end) holding every key under prefix.
func (s *Store) rangeOf(prefix string) (from, end string) {
	from = s.key(prefix)
	if from == "" {
		return "\x00", "\x00" // the whole key space
	}
	return from, clientv3.GetPrefixRangeEnd(from)
}

// storeKey strips the prefix from an etcd key.
func (s *Store) storeKey(k []byte) string { return string(k[len(s.cfg.Prefix):]) }

// noteUnary and noteStream are gRPC interceptors beneath the etcd client's
// own: they see gRPC's connection errors before the client turns a wait
// for a connection into a bare "context deadline exceeded".
func (s *Store) noteUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	s.noteConn(err)
	return err
}

func (s *Store) noteStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	s.noteConn(err)
	return cs, err
}

var noConnErr = ""

// noteConn remembers a connection failure, or forgets it after a success.
func (s *Store) noteConn(err error) {
	if err == nil {
		s.connErr.Store(&noConnErr)
		return
	}
	msg := status.Convert(err).Message()
	for _, marker := range []string{"latest balancer error: ", "connection error: "} {
		if i := strings.Index(msg, marker); i >= 0 {
			msg = msg[i+len(marker):]
			s.connErr.Store(&msg)
			return
		}
	}
}

// Connected is store.Connectivity: nil while the client's connection is
// ready, else ErrUnreachable. A killed or cut-off member is seen at once:
// gRPC reconnects the streams this store holds open (its watches, the
// lease renewals') and reports connecting, then a transient failure,
// within milliseconds. An idle connection (after a member's graceful
// goodbye) is asked to connect, and a connecting one is given up to
// connectWait to settle.
func (s *Store) Connected() error {
	conn := s.client.ActiveConnection()
	st := conn.GetState()
	if st == connectivity.Idle {
		conn.Connect()
		st = conn.GetState()
	}
	if st == connectivity.Idle || st == connectivity.Connecting {
		ctx, cancel := context.WithTimeout(context.Background(), connectWait)
		for (st == connectivity.Idle || st == connectivity.Connecting) && conn.WaitForStateChange(ctx, st) {
			st = conn.GetState()
		}
		cancel()
	}
	if st == connectivity.Ready {
		return nil
	}
	return fmt.Errorf("etcd %s: connection %s%s: %w", s.cfg.where(), strings.ToLower(st.String()), s.reason(), ErrUnreachable)
}

// connectWait bounds how long Connected waits for a connection that is
// being made.
const connectWait = time.Second

// reason is " (connection error: ...)" when gRPC reported why it cannot
// connect.
func (s *Store) reason() string {
	if p := s.connErr.Load(); p != nil && *p != "" {
		return " (" + *p + ")"
	}
	return ""
}
