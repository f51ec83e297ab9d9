package ovs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/nlutil"
	"github.com/tether-net/tether/internal/ovsdb"
)

// Repair checks an endpoint on restore (driver.Repairer). It is intact
// when its host end carries its marker and is the peer of the recorded
// sandbox interface, and its port is on the network's OVS bridge with the
// network's VLAN and protection. A pair that is intact but whose port row
// is gone or changed (the database replaced, a `ovs-vsctl del-port`) gets
// its port back in place: traffic resumes, nothing in the sandbox moves.
// Anything else is deleted and joined again, with a new host end name
// (filled in ep.HostIfName). On the userspace datapath an intact pair
// with transmit checksum offload on at either end gets it turned off (as
// Join does) and counts as repaired. An intact endpoint is not touched. ovs-vswitchd's own restart needs no repair: it rebuilds the
// datapath from the database, and the internal ports' tap devices persist
// with their addresses.
func (d *Driver) Repair(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string, inside map[string]driver.SandboxLink) (bool, error) {
	o, err := d.options(n)
	if err != nil {
		return false, err
	}
	in, err := sandboxLink(ep, nsPath, inside)
	if err != nil {
		return false, err
	}
	if d.hostEndIntact(ep, in) {
		return d.repairPort(ctx, n, ep, o, nsPath)
	}
	if in != nil {
		if sb, err := tns.NewHandle(nsPath); err == nil {
			if l, err := sb.LinkByName(ep.IfName); err == nil {
				_ = sb.LinkDel(l) // half of a broken pair
			}
			sb.Close()
		}
	}
	if err := d.Leave(ctx, n, ep, nsPath); err != nil {
		return false, err
	}
	// A new host name: ovs-vswitchd may still hold the old device open
	// under the old name (a delete and re-add it applies at once).
	ep.HostIfName = ""
	if err := d.Join(ctx, n, ep, nsPath); err != nil {
		return false, err
	}
	return true, nil
}

// sandboxLink is the endpoint's interface in the sandbox, from inside when
// listed, else looked up; nil when it is not there.
func sandboxLink(ep *driver.Endpoint, nsPath string, inside map[string]driver.SandboxLink) (*driver.SandboxLink, error) {
	if inside != nil {
		if in, ok := inside[ep.IfName]; ok {
			return &in, nil
		}
		return nil, nil
	}
	sb, err := tns.NewHandle(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open sandbox namespace: %w", err)
	}
	defer sb.Close()
	l, err := sb.LinkByName(ep.IfName)
	if err != nil {
		if nlutil.IsLinkGone(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("find %q in the sandbox: %w", ep.IfName, err)
	}
	_, veth := l.(*netlink.Veth)
	return &driver.SandboxLink{Name: l.Attrs().Name, Index: l.Attrs().Index, PeerIndex: l.Attrs().ParentIndex, Veth: veth}, nil
}

// repairPort puts the endpoint's port back on the bridge as Join made it,
// unless it is there already, and turns checksum offload off on the pair
// where the datapath needs it (a pair made before Tether did, or changed
// since); it reports whether it changed anything.
func (d *Driver) repairPort(ctx context.Context, n *driver.Network, ep *driver.Endpoint, o options, nsPath string) (bool, error) {
	c, err := d.dial(ctx, o)
	if err != nil {
		return false, err
	}
	defer c.Close()
	offload, err := d.checksumOffloadOff(ctx, c, o, ep, nsPath)
	if err != nil {
		return false, err
	}
	port, err := d.ensurePort(ctx, c, n, ep, o)
	return offload || port, err
}

// ensurePort adds the endpoint's port to the bridge unless it is there
// with the right VLAN, protection and owner; it reports whether it did.
func (d *Driver) ensurePort(ctx context.Context, c *ovsdb.Client, n *driver.Network, ep *driver.Endpoint, o options) (bool, error) {
	want := portSpec(n, ep, o)
	p, err := c.FindPort(ctx, ep.HostIfName)
	if err != nil {
		return false, err
	}
	if p != nil && p.Tag == want.Tag && p.Protected == want.Protected && p.ExternalIDs[KeyOwner] == ep.ID {
		b, err := c.BridgeOfPort(ctx, p.UUID)
		if err != nil {
			return false, err
		}
		if b != nil && b.Name == o.bridge {
			return false, nil
		}
		if err := c.DeletePort(ctx, p.UUID); err != nil { // on another bridge
			return false, err
		}
	}
	if _, err := c.AddPort(ctx, o.bridge, want); err != nil {
		return false, fmt.Errorf("OVS bridge %q: %w", o.bridge, err)
	}
	if err := applied(ctx, c); err != nil {
		return false, err
	}
	return true, nil
}

// Sweep removes what Tether added to the default database and no record
// names (driver.Sweeper): ports whose owner is not in keep or that carry
// another name than keep gives them (with their veth pairs), then bridges
// Tether made whose owning network is gone and on which no port but their
// own is left. Networks with their own ovs.db are not swept (DeleteNetwork
// cleans them). No database socket (OVS not installed) is nothing to do.
func (d *Driver) Sweep(ctx context.Context, keep map[string]string) (int, error) {
	o := options{db: d.defaultDB}
	if path, ok := strings.CutPrefix(o.db, "unix:"); ok {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
	}
	c, err := d.dial(ctx, o)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	ports, err := c.FindPorts(ctx, ovsdb.Map{})
	if err != nil {
		return 0, err
	}
	count := 0
	var errs []error
	for _, p := range ports {
		owner, ok := p.ExternalIDs[KeyOwner]
		if !ok || !driver.IsID(owner) || keep[owner] == p.Name {
			continue
		}
		if err := c.DeletePort(ctx, p.UUID); err != nil {
			errs = append(errs, err)
			continue
		}
		count++
		if p.ExternalIDs[KeyRole] == "endpoint" {
			errs = append(errs, d.deleteHostEnd(p.Name, owner))
		}
	}
	n, err := d.sweepBridges(ctx, c, keep)
	return count + n, errors.Join(append(errs, err)...)
}

func (d *Driver) sweepBridges(ctx context.Context, c *ovsdb.Client, keep map[string]string) (int, error) {
	bridges, err := c.FindBridges(ctx, ovsdb.Map{})
	if err != nil {
		return 0, err
	}
	count := 0
	var errs []error
	for _, b := range bridges {
		owner, ok := b.ExternalIDs[KeyOwner]
		if !ok || !driver.IsID(owner) {
			continue
		}
		if _, live := keep[owner]; live {
			continue
		}
		ports, err := c.ListPorts(ctx, b.Name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(ports) > 1 || (len(ports) == 1 && ports[0].Name != b.Name && ports[0].ExternalIDs[KeyOwner] != owner) {
			continue // shared, still used
		}
		if err := c.DeleteBridge(ctx, &b); err != nil {
			errs = append(errs, err)
			continue
		}
		count++
	}
	return count, errors.Join(errs...)
}
