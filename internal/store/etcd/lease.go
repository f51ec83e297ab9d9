package etcd

import (
	"context"
	"fmt"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

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

// KeepAlive renews the lease once (etcd LeaseKeepAlive: one request and
// one answer); store.ErrLeaseNotFound once it expired or was revoked. The
// renewals of a store share one LeaseKeepAlive stream, kept open between
// them (keepAliveStream): a node renews every TTL/3, and opening a stream
// for each renewal (clientv3's KeepAliveOnce) costs the server a stream's
// setup and teardown every time, hosts times over.
func (s *Store) KeepAlive(ctx context.Context, id store.LeaseID) error {
	return s.call(ctx, fmt.Sprintf("keep lease %d alive", id), func(ctx context.Context) error {
		return s.ka.renew(ctx, s.client, id)
	})
}

// keepAliveStream is a store's LeaseKeepAlive stream: opened by the first
// renewal, used by one renewal at a time, dropped (and opened again by the
// next renewal) when it fails or a renewal gives up waiting.
type keepAliveStream struct {
	mu     sync.Mutex
	stream pb.Lease_LeaseKeepAliveClient
	cancel context.CancelFunc
}

func (k *keepAliveStream) renew(ctx context.Context, c *clientv3.Client, id store.LeaseID) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stream == nil {
		// The stream outlives this call (its context is the client's), but
		// opening it, which waits for a connection, is bounded by ctx.
		sctx, cancel := context.WithCancel(c.Ctx())
		var st pb.Lease_LeaseKeepAliveClient
		opened := make(chan error, 1)
		go func() {
			var err error
			st, err = pb.NewLeaseClient(c.ActiveConnection()).LeaseKeepAlive(sctx, grpc.WaitForReady(true))
			opened <- err
		}()
		select {
		case err := <-opened:
			if err != nil {
				cancel()
				return rpctypes.Error(err)
			}
		case <-ctx.Done():
			cancel()
			<-opened
			return ctx.Err()
		}
		k.stream, k.cancel = st, cancel
	}
	if err := k.stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(id)}); err != nil {
		k.dropLocked()
		return rpctypes.Error(err)
	}
	type answer struct {
		resp *pb.LeaseKeepAliveResponse
		err  error
	}
	got := make(chan answer, 1)
	st := k.stream
	go func() {
		r, err := st.Recv()
		got <- answer{r, err}
	}()
	select {
	case a := <-got:
		switch {
		case a.err != nil:
			k.dropLocked()
			return rpctypes.Error(a.err)
		case a.resp.ID != int64(id): // not this request's answer: start afresh
			k.dropLocked()
			return fmt.Errorf("lease %d: answer for lease %d", id, a.resp.ID)
		case a.resp.TTL <= 0:
			return rpctypes.ErrLeaseNotFound
		}
		return nil
	case <-ctx.Done():
		k.dropLocked() // the answer may still come: on a stream no one reads
		return ctx.Err()
	}
}

// close ends the stream (the store is closing).
func (k *keepAliveStream) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dropLocked()
}

func (k *keepAliveStream) dropLocked() {
	if k.cancel != nil {
		k.cancel()
	}
	k.stream, k.cancel = nil, nil
}

// Revoke ends the lease and deletes its keys in one revision (delete events
// in key order); store.ErrLeaseNotFound if it is already gone.
func (s *Store) Revoke(ctx context.Context, id store.LeaseID) error {
	return s.call(ctx, fmt.Sprintf("revoke lease %d", id), func(ctx context.Context) error {
		_, err := s.client.Revoke(ctx, clientv3.LeaseID(id))
		return err
	})
}
