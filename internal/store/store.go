// Package store is Tether's key-value state: a small interface shaped after
// etcd v3 (revisions, compare-and-swap, leases, prefix watch) so the local
// bbolt store and the distributed stores (etcd, ZooKeeper) are interchangeable.
// The store knows nothing of networks: keys are opaque slash-separated paths.
package store

import (
	"context"
	"errors"
	"time"
)

var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("key not found")
	// ErrExists: Create found the key already present.
	ErrExists = errors.New("key already exists")
	// ErrConflict: a compare (revision) did not hold; re-read and retry.
	ErrConflict = errors.New("revision conflict")
	// ErrLeaseNotFound: the lease expired or was revoked.
	ErrLeaseNotFound = errors.New("lease not found")
	// ErrCompacted: Watch was asked to replay from a revision older than the
	// history the store still holds; List again and watch from now.
	ErrCompacted = errors.New("revision compacted")
)

// LeaseID names a lease; keys attached to it are deleted when it expires.
// NoLease (0) means the key lives until deleted.
type LeaseID int64

const NoLease LeaseID = 0

// KV is one key with its value and the store revision that last modified it.
type KV struct {
	Key      string
	Value    []byte
	Revision int64 // ModRevision: changes on every write of this key; > 0 for existing keys.
	Lease    LeaseID
}

// EventType says what happened to a key.
type EventType int

const (
	EventPut EventType = iota + 1
	EventDelete
)

// Event is one change seen by Watch. For EventDelete, KV.Value is nil and
// KV.Revision is the revision of the deletion.
type Event struct {
	Type EventType
	KV   KV
}

// OpType is the kind of one operation in a transaction.
type OpType int

const (
	OpPut OpType = iota + 1
	OpDelete
)

// Op is one write in a transaction.
type Op struct {
	Type  OpType
	Key   string
	Value []byte
	Lease LeaseID
}

// Cmp is one condition of a transaction: the key's current revision must equal
// Revision (0 means "the key must not exist").
type Cmp struct {
	Key      string
	Revision int64
}

// Put, Delete and Revision build Ops and Cmps.
func Put(key string, value []byte) Op { return Op{Type: OpPut, Key: key, Value: value} }
func PutLease(key string, v []byte, l LeaseID) Op {
	return Op{Type: OpPut, Key: key, Value: v, Lease: l}
}
func Delete(key string) Op                 { return Op{Type: OpDelete, Key: key} }
func Absent(key string) Cmp                { return Cmp{Key: key, Revision: 0} }
func AtRevision(key string, rev int64) Cmp { return Cmp{Key: key, Revision: rev} }

// Connectivity is implemented by stores that know, without a round trip,
// whether their connection to the server is up. Connected returns nil when
// it is (or when that is not known), else an error saying why not. A store
// killed or cut off is seen within milliseconds (the client's connection
// drops), where a request would wait for its timeout.
type Connectivity interface {
	Connected() error
}

// Connected is st's Connectivity, nil for stores that do not know.
func Connected(st Store) error {
	if c, ok := st.(Connectivity); ok {
		return c.Connected()
	}
	return nil
}

// Store is the state backend. All methods are safe for concurrent use.
type Store interface {
	// Get returns the key or ErrNotFound.
	Get(ctx context.Context, key string) (KV, error)
	// List returns every key starting with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]KV, error)
	// Put writes the key unconditionally and returns the new revision.
	Put(ctx context.Context, key string, value []byte, lease LeaseID) (int64, error)
	// Create writes the key only if it does not exist (else ErrExists).
	Create(ctx context.Context, key string, value []byte, lease LeaseID) (int64, error)
	// CompareAndSwap writes the key only if its revision is still prevRev
	// (else ErrConflict; ErrNotFound if it is gone).
	CompareAndSwap(ctx context.Context, key string, value []byte, prevRev int64, lease LeaseID) (int64, error)
	// Delete removes the key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// CompareAndDelete removes the key only if its revision is still prevRev (else ErrConflict).
	CompareAndDelete(ctx context.Context, key string, prevRev int64) error
	// Txn applies ops atomically if every cmp holds; otherwise applies nothing
	// and returns ErrConflict. It returns the revision of the write.
	Txn(ctx context.Context, cmps []Cmp, ops []Op) (int64, error)
	// Watch streams changes under prefix with revision > afterRev until ctx is
	// done; the channel is closed then. afterRev 0 means "from now"; an
	// afterRev older than the history the store keeps fails with
	// ErrCompacted. The channel is also closed when the store closes or the
	// watcher falls too far behind: List again and re-watch.
	Watch(ctx context.Context, prefix string, afterRev int64) (<-chan Event, error)
	// Grant creates a lease with the given TTL.
	Grant(ctx context.Context, ttl time.Duration) (LeaseID, error)
	// KeepAlive renews the lease once (callers loop); ErrLeaseNotFound if expired.
	KeepAlive(ctx context.Context, id LeaseID) error
	// Revoke ends the lease and deletes its keys.
	Revoke(ctx context.Context, id LeaseID) error
	// Close releases the backend.
	Close() error
}
