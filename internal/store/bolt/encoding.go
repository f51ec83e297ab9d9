package bolt

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/tether-net/tether/internal/store"
)

// kvHeader is the mod revision and lease ID in front of every value.
const kvHeader = 16

func encodeInt(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

// decodeInt reads an 8-byte big-endian integer; a missing value reads as 0.
func decodeInt(b []byte) int64 {
	if len(b) < 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}

func encodeKV(rev int64, lease store.LeaseID, value []byte) []byte {
	b := make([]byte, kvHeader, kvHeader+len(value))
	binary.BigEndian.PutUint64(b, uint64(rev))
	binary.BigEndian.PutUint64(b[8:], uint64(lease))
	return append(b, value...)
}

// decodeKV copies a stored record out of bbolt's memory.
func decodeKV(key []byte, raw []byte) (store.KV, error) {
	if len(raw) < kvHeader {
		return store.KV{}, fmt.Errorf("key %q: corrupt record (%d bytes)", key, len(raw))
	}
	return store.KV{
		Key:      string(key),
		Value:    append([]byte{}, raw[kvHeader:]...),
		Revision: decodeInt(raw),
		Lease:    store.LeaseID(decodeInt(raw[8:])),
	}, nil
}

// lease is one row of the leases bucket.
type lease struct {
	ttl      time.Duration
	deadline time.Time
}

func encodeLease(l lease) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(l.ttl))
	return binary.BigEndian.AppendUint64(b, uint64(l.deadline.UnixNano()))
}

func decodeLease(raw []byte) (lease, bool) {
	if len(raw) < 16 {
		return lease{}, false
	}
	return lease{ttl: time.Duration(decodeInt(raw)), deadline: time.Unix(0, decodeInt(raw[8:]))}, true
}

func leaseKey(id store.LeaseID) []byte { return encodeInt(int64(id)) }

// indexKey is the leasekeys row naming key as one of the lease's keys.
func indexKey(id store.LeaseID, key string) []byte { return append(leaseKey(id), key...) }
