// Package bolt is the local store.Store: one bbolt file under the daemon's
// data-root, shaped after etcd v3 so the engine cannot tell it from the
// distributed stores.
//
// Layout of the file (all integers 8-byte big-endian):
//
//	meta/      "schema" -> 1, "rev" -> current revision, "lease" -> last lease ID
//	kv/        key -> mod revision | lease ID | value
//	leases/    lease ID -> TTL (ns) | deadline (unix ns, wall clock)
//	leasekeys/ lease ID | key -> "" (index: the keys a lease must delete)
//
// Why this shape: every write is one bbolt Update (one fsync), and a Txn of
// any size is still one Update, so an attach costs one commit. The revision
// lives in the same file as the keys, so it survives restarts and never goes
// back. Lease deadlines are wall-clock times, so leases that ran out while
// the daemon was down are expired when it opens the file again. The leasekeys
// index makes revoking a lease cost its own keys, not a scan of the store.
// Watch is served from memory: committed events fan out to per-watcher
// buffered channels, and a bounded ring of recent events allows replay.
package bolt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/tether-net/tether/internal/store"
)

var (
	// ErrLocked: another process (usually another daemon) holds the file.
	ErrLocked = errors.New("locked by another process")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
)

const schemaVersion = 1

var (
	bucketMeta      = []byte("meta")
	bucketKV        = []byte("kv")
	bucketLeases    = []byte("leases")
	bucketLeaseKeys = []byte("leasekeys")

	metaSchema = []byte("schema")
	metaRev    = []byte("rev")
	metaLease  = []byte("lease")
)

// Store is the bbolt-backed store.Store. All methods are safe for concurrent use.
type Store struct {
	path string
	db   *bbolt.DB
	hub  *hub
	log  *slog.Logger

	// writeMu serialises write transactions together with the publication
	// of their events, so watchers see events in revision order.
	writeMu sync.Mutex

	stop      context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

type config struct {
	lockTimeout    time.Duration
	history        int
	watchBuffer    int
	expiryInterval time.Duration
	log            *slog.Logger
	noSync         bool
}

// Option tunes Open.
type Option func(*config)

// WithLockTimeout sets how long Open waits for the file lock (default 1s).
func WithLockTimeout(d time.Duration) Option { return func(c *config) { c.lockTimeout = d } }

// WithHistory sets how many recent events Watch can replay (default 1000).
func WithHistory(n int) Option { return func(c *config) { c.history = n } }

// WithWatchBuffer sets each watcher's queue length (default 1024, never less
// than the history). A watcher whose queue overflows has its channel closed.
func WithWatchBuffer(n int) Option { return func(c *config) { c.watchBuffer = n } }

// WithExpiryInterval sets how often leases are checked for expiry (default 100ms).
func WithExpiryInterval(d time.Duration) Option { return func(c *config) { c.expiryInterval = d } }

// WithNoSync makes commits skip fsync: a commit is in the page cache when it
// returns, so it survives the process but not the machine. Only for a store
// whose records die with the machine anyway (the engine's runtime store
// under the exec-root: records of namespaces and links, docs/store.md).
func WithNoSync() Option { return func(c *config) { c.noSync = true } }

// WithLogger sets where background errors (lease expiry) are logged.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// Open opens or creates the store file at path (parent directories 0700,
// file 0600), expires leases whose deadline passed while it was closed, and
// starts the lease expiry loop. If another process holds the file, Open
// fails after the lock timeout with an error wrapping ErrLocked.
func Open(path string, opts ...Option) (*Store, error) {
	cfg := config{lockTimeout: time.Second, history: 1000, watchBuffer: 1024, expiryInterval: 100 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	cfg.history = max(cfg.history, 1)
	cfg.watchBuffer = max(cfg.watchBuffer, cfg.history)
	if cfg.log == nil {
		cfg.log = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create directory for store %q: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: cfg.lockTimeout, NoSync: cfg.noSync, NoGrowSync: cfg.noSync})
	if errors.Is(err, bberrors.ErrTimeout) {
		return nil, fmt.Errorf("store %q is %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %q: %w", path, err)
	}
	rev, err := initFile(db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %q: %w", path, err)
	}
	s := &Store{path: path, db: db, hub: newHub(rev, cfg.history, cfg.watchBuffer), log: cfg.log}
	if err := s.expire(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %q: expire leases: %w", path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.wg.Add(1)
	go s.expireLoop(ctx, cfg.expiryInterval)
	return s, nil
}

// initFile creates the buckets, checks the schema and returns the revision.
func initFile(db *bbolt.DB) (int64, error) {
	var rev int64
	err := db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketKV, bucketLeases, bucketLeaseKeys} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(metaSchema); {
		case v == nil:
			if err := meta.Put(metaSchema, encodeInt(schemaVersion)); err != nil {
				return err
			}
		case decodeInt(v) != schemaVersion:
			return fmt.Errorf("schema version %d, want %d", decodeInt(v), schemaVersion)
		}
		rev = decodeInt(meta.Get(metaRev))
		return nil
	})
	return rev, err
}

// Path returns the file the store lives in.
func (s *Store) Path() string { return s.path }

// Close stops lease expiry, closes every watcher's channel and closes the
// file. Calling it again returns the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		s.wg.Wait()
		s.hub.close()
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("close store %q: %w", s.path, err)
		}
	})
	return s.closeErr
}

// view runs fn in a read transaction.
func (s *Store) view(ctx context.Context, fn func(tx *bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return closedErr(s.db.View(fn))
}

func closedErr(err error) error {
	if errors.Is(err, bberrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}
