package etcd

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tether-net/tether/internal/store"
)

// Grant creates an etcd lease. etcd counts TTLs in whole seconds: ttl is
// rounded up to the next second (at least 1s), and the server may raise it
// further to its minimum, ceil(1.5 x election timeout) (2s with etcd's
// default 1s election timeout). Expiry is checked by the leader every 500ms,
// and a new leader restarts every lease's countdown, so a lease ends between
// its TTL and TTL + an election + 0.5s after the last keep-alive.
func (s *Store) Grant(ctx context.Context, ttl time.Duration) (store.LeaseID, error) {
	if ttl <= 0 {
		return 0, fmt.Errorf("grant lease: ttl %v is not positive", ttl)
	}
	secs := ttlSeconds(ttl)
	var id store.LeaseID
	err := s.call(ctx, "grant lease", func(ctx context.Context) error {
		resp, err := s.client.Grant(ctx, secs)
		if err != nil {
			return err
		}
		id = store.LeaseID(resp.ID)
		if resp.TTL != secs {
			s.log.Debug("etcd raised a lease TTL", "asked", ttl, "granted", time.Duration(resp.TTL)*time.Second)
		}
		return nil
	})
	return id, err
}

// ttlSeconds rounds ttl up to whole seconds, at least one.
func ttlSeconds(ttl time.Duration) int64 {
	return max(1, int64((ttl+time.Second-1)/time.Second))
}

// KeepAlive renews the lease once (etcd LeaseKeepAlive, one request and
// one answer); store.ErrLeaseNotFound once it expired or was revoked.
func (s *Store) KeepAlive(ctx context.Context, id store.LeaseID) error {
	return s.call(ctx, fmt.Sprintf("keep lease %d alive", id), func(ctx context.Context) error {
		_, err := s.client.KeepAliveOnce(ctx, clientv3.LeaseID(id))
		return err
	})
}

// Revoke ends the lease and deletes its keys in one revision (delete events
// in key order); store.ErrLeaseNotFound if it is already gone.
func (s *Store) Revoke(ctx context.Context, id store.LeaseID) error {
	return s.call(ctx, fmt.Sprintf("revoke lease %d", id), func(ctx context.Context) error {
		_, err := s.client.Revoke(ctx, clientv3.LeaseID(id))
		return err
	})
}
