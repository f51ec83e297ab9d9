package store

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

var (
	// ErrUnreachable: no server of a distributed store answered within the
	// request (or dial) timeout. The call may be retried; the clients
	// reconnect by themselves.
	ErrUnreachable = errors.New("store unreachable")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
)

// HostPort checks one "host[:port]" of a cluster-store URL (IPv6 hosts in
// brackets) and adds defaultPort when none is given. what names the part in
// errors ("endpoint", "server").
func HostPort(h, defaultPort, what string) (string, error) {
	host, port := h, defaultPort
	switch {
	case h == "":
		return "", fmt.Errorf("empty host")
	case strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]"):
		host = h[1 : len(h)-1]
	case strings.HasPrefix(h, "[") || strings.Count(h, ":") == 1:
		var err error
		if host, port, err = net.SplitHostPort(h); err != nil {
			return "", fmt.Errorf("%s %q: %v", what, h, err)
		}
	case strings.Contains(h, ":"):
		return "", fmt.Errorf("%s %q: bracket IPv6 addresses ([addr]:port)", what, h)
	}
	if host == "" {
		return "", fmt.Errorf("%s %q: empty host", what, h)
	}
	if strings.HasPrefix(h, "[") && net.ParseIP(host) == nil {
		return "", fmt.Errorf("%s %q: %q is not an IPv6 address", what, h, host)
	}
	if !strings.HasPrefix(h, "[") && !hostName(host) {
		return "", fmt.Errorf("%s %q: %q is not a host name or IPv4 address (letters, digits, '-', '_' and '.')", what, h, host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%s %q: port %q is not 1-65535", what, h, port)
	}
	return net.JoinHostPort(host, port), nil
}

// hostName: the bytes of a DNS name or an IPv4 address (underscores too,
// as resolvers accept them in names).
func hostName(s string) bool {
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', b == '-', b == '_', b == '.':
		default:
			return false
		}
	}
	return true
}

// ErrEmptyKey: a key (or a Txn compare's key) was empty.
var ErrEmptyKey = errors.New("empty key")

// CheckTxn rejects, before any server is asked, what every backend refuses
// in a transaction: empty keys, unknown op types, a key in two ops.
func CheckTxn(cmps []Cmp, ops []Op) error {
	for _, c := range cmps {
		if c.Key == "" {
			return fmt.Errorf("txn: compare: %w", ErrEmptyKey)
		}
	}
	seen := make(map[string]struct{}, len(ops))
	for _, op := range ops {
		if op.Type != OpPut && op.Type != OpDelete {
			return fmt.Errorf("txn: op on %q: unknown type %d", op.Key, op.Type)
		}
		if op.Key == "" {
			return fmt.Errorf("txn: %w", ErrEmptyKey)
		}
		if _, dup := seen[op.Key]; dup {
			return fmt.Errorf("txn: duplicate key %q", op.Key)
		}
		seen[op.Key] = struct{}{}
	}
	return nil
}
