package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tether-net/tether/internal/store"
)

// VNIs are allocated from MinVNI up, as Docker's overlay did (4096+).
const (
	MinVNI = 4096
	MaxVNI = 1<<24 - 1
)

// Errors callers map to API answers.
var (
	ErrNameInUse   = errors.New("network name already in use")
	ErrSubnetInUse = errors.New("subnet overlaps another global network")
	ErrVNIInUse    = errors.New("VNI already in use")
	ErrNotFound    = errors.New("not found")
	ErrInUse       = errors.New("network has active endpoints")
	ErrAddrInUse   = errors.New("address already in use")
	ErrNoAddress   = errors.New("no free address")
	ErrOutOfSubnet = errors.New("address outside the subnet")
)

// NetworkRecord is a global network as every node sees it.
type NetworkRecord struct {
	ID      string       `json:"id"`
	Name    string       `json:"name"`
	Driver  string       `json:"driver"`
	VNI     int          `json:"vni"`
	Subnet  netip.Prefix `json:"subnet"`
	Gateway netip.Addr   `json:"gateway"`
	// Subnet6 and Gateway6 are a dual-stack network's IPv6 side (zero on
	// an IPv4-only network, and in records written before IPv6). An
	// endpoint's IPv6 address is derived from its IPv4 one (Address6).
	Subnet6    netip.Prefix      `json:"subnet6,omitzero"`
	Gateway6   netip.Addr        `json:"gateway6,omitzero"`
	Created    time.Time         `json:"created"`
	Internal   bool              `json:"internal,omitempty"`
	Attachable bool              `json:"attachable,omitempty"`
	Options    map[string]string `json:"options,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	IPAMOpts   map[string]string `json:"ipamOptions,omitempty"`
	CreatedBy  string            `json:"createdBy"` // node ID
	// Deleting is set while a removal checks for endpoints; attaches
	// compare the network key's revision, so none can slip in meanwhile.
	Deleting bool `json:"deleting,omitempty"`
}

func subnetKey(p netip.Prefix) string { return keySubnets + strings.ReplaceAll(p.String(), "/", "_") }

// Networks lists the global networks.
func (c *Cluster) Networks(ctx context.Context) ([]NetworkRecord, error) {
	kvs, err := c.st.List(ctx, keyNetworks)
	if err != nil {
		return nil, fmt.Errorf("cluster store: list networks: %w", err)
	}
	out := make([]NetworkRecord, 0, len(kvs))
	for _, kv := range kvs {
		var n NetworkRecord
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			return nil, fmt.Errorf("cluster store: network %s: %w", kv.Key, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// SubnetChooser picks a free subnet given the global networks' subnets.
type SubnetChooser func(taken []netip.Prefix) (netip.Prefix, error)

// CreateNetwork records n cluster-wide. Its name, VNI and subnets are
// claimed in the same transaction as the record, so two nodes creating
// networks at once never share any of them. A zero n.Subnet is chosen by
// choose; a zero n.VNI is the lowest free one; a zero gateway is the
// subnet's first host. The gateway address is claimed (reserved) as
// Docker's overlay does. n.Subnet6, when set, is never chosen here (the
// caller picks it); a zero n.Gateway6 is the IPv6 address at the gateway's
// offset (see ipv6.go), which its IPv4 claim reserves with it.
func (c *Cluster) CreateNetwork(ctx context.Context, n NetworkRecord, choose SubnetChooser) (NetworkRecord, error) {
	wantVNI, wantSubnet, wantGateway, wantGateway6 := n.VNI, n.Subnet, n.Gateway, n.Gateway6
	for range 20 {
		nets, err := c.Networks(ctx)
		if err != nil {
			return n, err
		}
		usedVNI := map[int]bool{}
		var taken []netip.Prefix
		for _, o := range nets {
			if o.Name == n.Name {
				return n, fmt.Errorf("network %q: %w", n.Name, ErrNameInUse)
			}
			usedVNI[o.VNI] = true
			taken = append(taken, o.Subnet)
		}
		n.Subnet = wantSubnet
		if !n.Subnet.IsValid() {
			if n.Subnet, err = choose(taken); err != nil {
				return n, err
			}
		}
		for _, o := range nets {
			if o.Subnet.Overlaps(n.Subnet) {
				return n, fmt.Errorf("subnet %s overlaps network %q (%s): %w", n.Subnet, o.Name, o.Subnet, ErrSubnetInUse)
			}
			if o.Subnet6.Overlaps(n.Subnet6) {
				return n, fmt.Errorf("subnet6 %s overlaps network %q (%s): %w", n.Subnet6, o.Name, o.Subnet6, ErrSubnetInUse)
			}
		}
		n.VNI = wantVNI
		if n.VNI == 0 {
			for v := MinVNI; v <= MaxVNI && n.VNI == 0; v++ {
				if !usedVNI[v] {
					n.VNI = v
				}
			}
		} else if usedVNI[n.VNI] {
			return n, fmt.Errorf("vxlan id %d: %w", n.VNI, ErrVNIInUse)
		}
		n.Gateway = wantGateway
		if !n.Gateway.IsValid() {
			n.Gateway = n.Subnet.Masked().Addr().Next()
		}
		if !n.Subnet.Contains(n.Gateway) {
			return n, fmt.Errorf("gateway %s outside subnet %s: %w", n.Gateway, n.Subnet, ErrOutOfSubnet)
		}
		n.Gateway6 = wantGateway6
		if n.Subnet6.IsValid() && !n.Gateway6.IsValid() {
			n.Gateway6, _ = Derive6(n.Subnet, n.Subnet6, n.Gateway) // checked just below
		}
		if err := checkSubnet6(n); err != nil {
			return n, fmt.Errorf("network %q: %w", n.Name, err)
		}
		n.CreatedBy = c.self.ID
		b, _ := json.Marshal(n)
		gw, _ := json.Marshal(Claim{Node: c.self.ID, Gateway: true})
		vniKey := keyVNIs + strconv.Itoa(n.VNI)
		cmps := []store.Cmp{store.Absent(keyNetNames + n.Name), store.Absent(vniKey), store.Absent(subnetKey(n.Subnet.Masked()))}
		ops := []store.Op{store.Put(keyNetworks+n.ID, b), store.Put(keyNetNames+n.Name, []byte(n.ID)),
			store.Put(vniKey, []byte(n.ID)), store.Put(subnetKey(n.Subnet.Masked()), []byte(n.ID)),
			store.Put(addrKey(n.ID, n.Gateway), gw)}
		if n.Subnet6.IsValid() {
			cmps = append(cmps, store.Absent(subnetKey(n.Subnet6)))
			ops = append(ops, store.Put(subnetKey(n.Subnet6), []byte(n.ID)))
		}
		_, err = c.st.Txn(ctx, cmps, ops)
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return n, fmt.Errorf("cluster store: create network %q: %w", n.Name, err)
		}
		// Someone else won a race: the next round sees what they took.
	}
	return n, fmt.Errorf("cluster store: create network %q: too much contention, try again", n.Name)
}

// getNetwork reads a network record and its revision.
func (c *Cluster) getNetwork(ctx context.Context, id string) (NetworkRecord, int64, error) {
	kv, err := c.st.Get(ctx, keyNetworks+id)
	if errors.Is(err, store.ErrNotFound) {
		return NetworkRecord{}, 0, fmt.Errorf("network %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return NetworkRecord{}, 0, fmt.Errorf("cluster store: read network %s: %w", id, err)
	}
	var n NetworkRecord
	if err := json.Unmarshal(kv.Value, &n); err != nil {
		return NetworkRecord{}, 0, fmt.Errorf("cluster store: network %s: %w", id, err)
	}
	if n.Deleting {
		return n, kv.Revision, fmt.Errorf("network %q is being removed: %w", n.Name, ErrNotFound)
	}
	return n, kv.Revision, nil
}

// RemoveNetwork deletes a global network that has no endpoint left on any
// node, with its name, VNI, subnet, address claims and sticky addresses.
// It first marks the record (a compare-and-swap that makes every later
// attach's transaction fail), then looks for endpoints: one that committed
// before the mark is seen, and the mark is taken back.
func (c *Cluster) RemoveNetwork(ctx context.Context, id string) error {
	n, rev, err := c.getNetwork(ctx, id)
	if err != nil {
		return err
	}
	n.Deleting = true
	b, _ := json.Marshal(n)
	markRev, err := c.st.CompareAndSwap(ctx, keyNetworks+id, b, rev, store.NoLease)
	if err != nil {
		return fmt.Errorf("cluster store: remove network %q: %w", n.Name, err)
	}
	unmark := func() {
		n.Deleting = false
		b, _ := json.Marshal(n)
		_, _ = c.st.CompareAndSwap(context.WithoutCancel(ctx), keyNetworks+id, b, markRev, store.NoLease)
	}
	eps, err := c.st.List(ctx, keyEndpoints+id+"/")
	if err != nil {
		unmark()
		return fmt.Errorf("cluster store: remove network %q: %w", n.Name, err)
	}
	if len(eps) > 0 {
		unmark()
		var names []string
		for _, kv := range eps {
			var ep EndpointRecord
			if json.Unmarshal(kv.Value, &ep) == nil {
				names = append(names, ep.SandboxName+" on "+ep.NodeName)
			}
		}
		return fmt.Errorf("network %q has active endpoints (%s): %w", n.Name, strings.Join(names, ", "), ErrInUse)
	}
	blocks, err := c.liveBlocks(ctx, id)
	if err != nil || len(blocks.live) > 0 {
		unmark()
		if err != nil {
			return fmt.Errorf("cluster store: remove network %q: %w", n.Name, err)
		}
		return fmt.Errorf("network %q has attaches in progress (address blocks held by %s): %w", n.Name, strings.Join(blocks.live, ", "), ErrInUse)
	}
	ops := []store.Op{store.Delete(keyNetworks + id), store.Delete(keyNetNames + n.Name),
		store.Delete(keyVNIs + strconv.Itoa(n.VNI)), store.Delete(subnetKey(n.Subnet.Masked()))}
	if n.Subnet6.IsValid() {
		ops = append(ops, store.Delete(subnetKey(n.Subnet6.Masked())))
	}
	for _, k := range blocks.dead {
		ops = append(ops, store.Delete(k))
	}
	for _, pfx := range []string{keyAddrs + id + "/", keySticky + id + "/"} {
		kvs, err := c.st.List(ctx, pfx)
		if err != nil {
			unmark()
			return fmt.Errorf("cluster store: remove network %q: %w", n.Name, err)
		}
		for _, kv := range kvs {
			ops = append(ops, store.Delete(kv.Key))
		}
	}
	if _, err := c.st.Txn(ctx, []store.Cmp{store.AtRevision(keyNetworks+id, markRev)}, ops); err != nil {
		unmark()
		return fmt.Errorf("cluster store: remove network %q: %w", n.Name, err)
	}
	return nil
}

// netBlocksHeld are a network's address blocks: the names of the live
// nodes holding some, and the keys of those dead nodes hold.
type netBlocksHeld struct {
	live []string
	dead []string
}

// liveBlocks reads a network's blocks and the live nodes. A live node's
// block with no endpoint record in it is an attach in progress (blocks are
// given back with their last endpoint).
func (c *Cluster) liveBlocks(ctx context.Context, id string) (netBlocksHeld, error) {
	var out netBlocksHeld
	kvs, err := c.st.List(ctx, keyBlocks+id+"/")
	if err != nil || len(kvs) == 0 {
		return out, err
	}
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return out, err
	}
	live := map[string]string{}
	for _, n := range nodes {
		live[n.ID] = n.Name
	}
	for _, kv := range kvs {
		var b Block
		_ = json.Unmarshal(kv.Value, &b)
		if name, ok := live[b.Node]; ok {
			out.live = append(out.live, name+" ("+b.Prefix.String()+")")
		} else {
			out.dead = append(out.dead, kv.Key)
		}
	}
	return out, nil
}
