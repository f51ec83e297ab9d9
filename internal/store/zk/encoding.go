package zk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/tether-net/tether/internal/store"
)

// Paths of the layout (see the package comment).
func (s *Store) revPath() string                  { return s.root + "/rev" }
func (s *Store) keyPath(k string) string          { return s.root + "/kv/" + escapeKey(k) }
func (s *Store) logDir() string                   { return s.root + "/log" }
func (s *Store) logPath(n int64) string           { return fmt.Sprintf("%s/log/%020d", s.root, n) }
func (s *Store) alivePath(l store.LeaseID) string { return s.root + "/alive/" + leaseName(l) }
func (s *Store) leaseDir(l store.LeaseID) string  { return s.root + "/leases/" + leaseName(l) }
func (s *Store) leaseKeyPath(l store.LeaseID, k string) string {
	return s.leaseDir(l) + "/" + escapeKey(k)
}

// leaseName is a lease ID (a session ID) as a znode name: 16 hex digits.
func leaseName(l store.LeaseID) string { return fmt.Sprintf("%016x", uint64(l)) }

func parseLeaseName(name string) (store.LeaseID, bool) {
	u, err := strconv.ParseUint(name, 16, 64)
	if err != nil || len(name) != 16 {
		return 0, false
	}
	return store.LeaseID(u), true
}

// safe are the key bytes kept as they are in znode names.
func safe(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~:@+=,", c) >= 0
}

// escapeKey turns a key into one znode name: '/' and every other byte
// outside [A-Za-z0-9._~:@+=,-] become %XX, and so does a leading '.' (so
// "." and ".." stay legal). "tether/v1/node/x" -> "tether%2Fv1%2Fnode%2Fx".
func escapeKey(k string) string {
	var b strings.Builder
	b.Grow(len(k) + 16)
	for i := 0; i < len(k); i++ {
		c := k[i]
		if safe(c) && (c != '.' || i > 0) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// unescapeKey reverses escapeKey; false for names it cannot have made.
func unescapeKey(name string) (string, bool) {
	if !strings.Contains(name, "%") {
		return name, name != ""
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if name[i] != '%' {
			b.WriteByte(name[i])
			continue
		}
		if i+2 >= len(name) {
			return "", false
		}
		v, err := strconv.ParseUint(name[i+1:i+3], 16, 8)
		if err != nil {
			return "", false
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), true
}

// checkPrefix accepts "a" or "a/b/c" with segments made of safe bytes, not
// "." or "..", and not ZooKeeper's own /zookeeper.
func checkPrefix(p string) error {
	for i, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("prefix %q: empty, . or .. segment", p)
		}
		if i == 0 && seg == "zookeeper" {
			return fmt.Errorf("prefix %q: /zookeeper is ZooKeeper's own", p)
		}
		for j := 0; j < len(seg); j++ {
			if !safe(seg[j]) {
				return fmt.Errorf("prefix %q: %q is not allowed (letters, digits and -._~:@+=, only)", p, seg[j])
			}
		}
	}
	return nil
}

// A key's znode data: format byte, lease ID (8 bytes, big endian), value.
const (
	valueFormat = 1
	valueHeader = 9
	logFormat   = 1
)

var errCorrupt = errors.New("znode data not written by this store")

func encodeValue(l store.LeaseID, v []byte) []byte {
	b := make([]byte, valueHeader, valueHeader+len(v))
	b[0] = valueFormat
	binary.BigEndian.PutUint64(b[1:], uint64(l))
	return append(b, v...)
}

func decodeValue(b []byte) (store.LeaseID, []byte, error) {
	if len(b) < valueHeader || b[0] != valueFormat {
		return 0, nil, errCorrupt
	}
	return store.LeaseID(binary.BigEndian.Uint64(b[1:])), b[valueHeader:], nil
}

// A log entry: format byte, then per op: type byte, key length (uvarint),
// key, and for puts the lease (varint), value length (uvarint), value.
func encodeLog(ops []store.Op) []byte {
	b := []byte{logFormat}
	for _, op := range ops {
		b = append(b, byte(op.Type))
		b = binary.AppendUvarint(b, uint64(len(op.Key)))
		b = append(b, op.Key...)
		if op.Type == store.OpPut {
			b = binary.AppendVarint(b, int64(op.Lease))
			b = binary.AppendUvarint(b, uint64(len(op.Value)))
			b = append(b, op.Value...)
		}
	}
	return b
}

func decodeLog(b []byte) ([]store.Op, error) {
	if len(b) == 0 || b[0] != logFormat {
		return nil, errCorrupt
	}
	b = b[1:]
	var ops []store.Op
	bytesOf := func() ([]byte, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, false
		}
		v := b[k : k+int(n)]
		b = b[k+int(n):]
		return v, true
	}
	for len(b) > 0 {
		op := store.Op{Type: store.OpType(b[0])}
		b = b[1:]
		key, ok := bytesOf()
		if !ok {
			return nil, errCorrupt
		}
		op.Key = string(key)
		switch op.Type {
		case store.OpDelete:
		case store.OpPut:
			l, k := binary.Varint(b)
			if k <= 0 {
				return nil, errCorrupt
			}
			b = b[k:]
			op.Lease = store.LeaseID(l)
			if op.Value, ok = bytesOf(); !ok {
				return nil, errCorrupt
			}
			op.Value = append([]byte{}, op.Value...)
		default:
			return nil, errCorrupt
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// logMeta is log's data: the last trimmed counter and its revision.
type logMeta struct{ through, rev int64 }

func (m logMeta) encode() []byte { return fmt.Appendf(nil, "%d %d", m.through, m.rev) }

func parseLogMeta(b []byte) (logMeta, error) {
	var m logMeta
	if _, err := fmt.Sscanf(string(b), "%d %d", &m.through, &m.rev); err != nil {
		return m, fmt.Errorf("log metadata %q: %w", b, errCorrupt)
	}
	return m, nil
}

func parseCounter(b []byte) (int64, error) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("change counter %q: %w", b, errCorrupt)
	}
	return n, nil
}
