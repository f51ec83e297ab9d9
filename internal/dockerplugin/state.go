package dockerplugin

// What the plugin remembers, in Tether's own store: dockerd never repeats
// a call after the plugin restarts (no re-Activate, no replay of pools,
// networks or endpoints), so every mapping from Docker's IDs to Tether's
// objects must survive a restart of Tether.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/tether-net/tether/internal/store"
)

const (
	keyPrefix    = "tether/v1/docker/"
	keyPools     = keyPrefix + "pools/"     // PoolID -> pool
	keyNetworks  = keyPrefix + "networks/"  // Docker network ID -> binding
	keyEndpoints = keyPrefix + "endpoints/" // Docker endpoint ID, or "addr:<PoolID>/<addr>" -> endpoint
)

// pool is one address pool handed to Docker (RequestPool).
type pool struct {
	ID      string                `json:"id"`
	Space   string                `json:"space"`
	Subnet  netip.Prefix          `json:"subnet"`
	IPRange netip.Prefix          `json:"ipRange,omitzero"`
	Gateway netip.Addr            `json:"gateway,omitzero"`
	Aux     map[string]netip.Addr `json:"aux,omitempty"`
	// Network is the Tether network bound to an existing one through
	// the tether.network IPAM option ("" = a new network).
	Network string    `json:"network,omitempty"`
	Created time.Time `json:"created"`
}

// binding ties a Docker network to a Tether network.
type binding struct {
	DockerID string `json:"dockerId"`
	// TetherID is the Tether network's ID; "" while it is not made yet
	// (it is made once Docker has stored the network and its name can be
	// read, or by the first endpoint).
	TetherID string                `json:"tetherId,omitempty"`
	Name     string                `json:"name,omitempty"`
	PoolID   string                `json:"poolId,omitempty"`
	Global   bool                  `json:"global,omitempty"`
	Internal bool                  `json:"internal,omitempty"`
	Subnet   netip.Prefix          `json:"subnet,omitzero"`
	Gateway  netip.Addr            `json:"gateway,omitzero"`
	Aux      map[string]netip.Addr `json:"aux,omitempty"`     // --aux-address, by name
	Options  map[string]string     `json:"options,omitempty"` // driver options for the Tether network
	// Existing: bound to a Tether network made elsewhere (tether.network):
	// removing the Docker network leaves the Tether network alone.
	Existing bool      `json:"existing,omitempty"`
	Created  time.Time `json:"created"`
}

// endpoint is one Docker endpoint: a handed-over Tether sandbox with one
// endpoint. Before CreateEndpoint it is a reservation known by its address
// (RequestAddress made it).
type endpoint struct {
	Key        string     `json:"key"`
	PoolID     string     `json:"poolId,omitempty"`
	Address    netip.Addr `json:"address,omitzero"`
	DockerNet  string     `json:"dockerNet,omitempty"`
	EndpointID string     `json:"endpointId,omitempty"`
	SandboxID  string     `json:"sandboxId"`
	TetherNet  string     `json:"tetherNet"`
	Container  string     `json:"container,omitempty"`
	SandboxKey string     `json:"sandboxKey,omitempty"`
	Created    time.Time  `json:"created"`
}

func addrKey(poolID string, a netip.Addr) string { return "addr:" + poolID + "/" + a.String() }

// state is the plugin's memory, loaded from and written through to the
// store. Guarded by Plugin.mu.
type state struct {
	st        store.Store
	pools     map[string]*pool
	bindings  map[string]*binding
	endpoints map[string]*endpoint // by Key
}

func loadState(ctx context.Context, st store.Store) (*state, error) {
	s := &state{st: st, pools: map[string]*pool{}, bindings: map[string]*binding{}, endpoints: map[string]*endpoint{}}
	if err := loadAll(ctx, st, keyPools, func(p *pool) { s.pools[p.ID] = p }); err != nil {
		return nil, err
	}
	if err := loadAll(ctx, st, keyNetworks, func(b *binding) { s.bindings[b.DockerID] = b }); err != nil {
		return nil, err
	}
	if err := loadAll(ctx, st, keyEndpoints, func(e *endpoint) { s.endpoints[e.Key] = e }); err != nil {
		return nil, err
	}
	return s, nil
}

func loadAll[T any](ctx context.Context, st store.Store, prefix string, add func(*T)) error {
	kvs, err := st.List(ctx, prefix)
	if err != nil {
		return fmt.Errorf("docker plugin: read %s: %w", prefix, err)
	}
	for _, kv := range kvs {
		v := new(T)
		if err := json.Unmarshal(kv.Value, v); err != nil {
			return fmt.Errorf("docker plugin: record %s: %w", kv.Key, err)
		}
		add(v)
	}
	return nil
}

func (s *state) put(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := s.st.Put(ctx, key, b, 0); err != nil {
		return fmt.Errorf("docker plugin: record %s: %w", key, err)
	}
	return nil
}

func (s *state) savePool(ctx context.Context, p *pool) error {
	if err := s.put(ctx, keyPools+p.ID, p); err != nil {
		return err
	}
	s.pools[p.ID] = p
	return nil
}

func (s *state) dropPool(ctx context.Context, id string) error {
	if err := s.st.Delete(ctx, keyPools+id); err != nil {
		return err
	}
	delete(s.pools, id)
	return nil
}

func (s *state) saveBinding(ctx context.Context, b *binding) error {
	if err := s.put(ctx, keyNetworks+b.DockerID, b); err != nil {
		return err
	}
	s.bindings[b.DockerID] = b
	return nil
}

func (s *state) dropBinding(ctx context.Context, id string) error {
	if err := s.st.Delete(ctx, keyNetworks+id); err != nil {
		return err
	}
	delete(s.bindings, id)
	return nil
}

// saveEndpoint records e under its key; an endpoint that got its Docker ID
// moves from its address key to the ID in one transaction.
func (s *state) saveEndpoint(ctx context.Context, e *endpoint, oldKey string) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	ops := []store.Op{store.Put(keyEndpoints+e.Key, b)}
	if oldKey != "" && oldKey != e.Key {
		ops = append(ops, store.Delete(keyEndpoints+oldKey))
	}
	if _, err := s.st.Txn(ctx, nil, ops); err != nil {
		return fmt.Errorf("docker plugin: record endpoint %s: %w", e.Key, err)
	}
	if oldKey != "" {
		delete(s.endpoints, oldKey)
	}
	s.endpoints[e.Key] = e
	return nil
}

func (s *state) dropEndpoint(ctx context.Context, key string) error {
	if err := s.st.Delete(ctx, keyEndpoints+key); err != nil {
		return err
	}
	delete(s.endpoints, key)
	return nil
}
