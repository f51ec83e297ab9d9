package ovsdb

// Helpers for the Open_vSwitch database (vswitch.ovsschema), the ones
// Tether's OVS driver needs. The layout they read and write:
//
//	Open_vSwitch (one root row) --bridges--> Bridge --ports--> Port --interfaces--> Interface
//
// Bridge, Port and Interface are not root tables: a row nothing refers to
// is dropped at commit. So a port is deleted by removing it from its
// bridge's "ports" (its Interface rows go with it), and a bridge by
// removing it from Open_vSwitch's "bridges". ovs-vswitchd watches the
// database and makes the datapath follow: it creates a bridge's internal
// ports (tap devices with the userspace "netdev" datapath) and attaches
// system interfaces (veth ends) named by Interface rows.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// DB is the database ovs-vswitchd reads.
const DB = "Open_vSwitch"

var (
	// ErrNoRoot: the database has no Open_vSwitch row (`ovs-vsctl init`,
	// which the service's start script runs, makes it; Init here).
	ErrNoRoot = errors.New("the database has no Open_vSwitch row (run `ovs-vsctl init`)")
	// ErrNoBridge: the bridge named is not in the database.
	ErrNoBridge = errors.New("no such bridge")
	// ErrChanged: a guarded change was not made because what it was
	// based on changed meanwhile (read again and decide again).
	ErrChanged = errors.New("changed concurrently")
)

// Bridge is a Bridge row.
type Bridge struct {
	UUID         UUID
	Name         string
	DatapathType string // "" or "system": the kernel module; "netdev": userspace
	Ports        []UUID
	ExternalIDs  Map
}

// Port is a Port row.
type Port struct {
	UUID        UUID
	Name        string
	Tag         int // the access VLAN; -1: none (a trunk port)
	Protected   bool
	Interfaces  []UUID
	ExternalIDs Map
}

// PortSpec describes a port with one interface of the same name.
type PortSpec struct {
	Name string
	// Type is the Interface type: "" a system device that exists already
	// (the host end of a veth), "internal" a device ovs-vswitchd creates.
	Type string
	// Tag makes the port an access port of that VLAN (0..4095; 0 is the
	// untagged one); -1 leaves it a trunk port (all VLANs).
	Tag int
	// Protected ports cannot exchange frames with one another, only with
	// unprotected ports (Linux bridge port isolation).
	Protected bool
	// MTU is the interface's mtu_request; 0 leaves it to ovs-vswitchd.
	MTU int
	// ExternalIDs mark the Port and its Interface (ownership).
	ExternalIDs Map
}

// BridgeSpec describes a bridge; Port is its own internal port, named like
// the bridge (Port.Name and Type are ignored).
type BridgeSpec struct {
	Name         string
	DatapathType string // "" the kernel datapath, "netdev" userspace
	ExternalIDs  Map
	Port         PortSpec
}

func where(col string, v any) Condition { return Cond(col, "==", v) }

func (s PortSpec) portRow(ifaces any) Row {
	r := Row{"name": s.Name, "interfaces": ifaces, "protected": s.Protected, "external_ids": mapOrEmpty(s.ExternalIDs)}
	if s.Tag >= 0 {
		r["tag"], r["vlan_mode"] = s.Tag, "access"
	} else {
		r["tag"], r["vlan_mode"] = Set{}, Set{}
	}
	return r
}

func (s PortSpec) ifaceRow() Row {
	r := Row{"name": s.Name, "type": s.Type, "external_ids": mapOrEmpty(s.ExternalIDs)}
	if s.MTU > 0 {
		r["mtu_request"] = s.MTU
	}
	return r
}

func mapOrEmpty(m Map) Map {
	if m == nil {
		return Map{}
	}
	return m
}

// Init makes the Open_vSwitch root row when the database has none, as
// `ovs-vsctl init` does (a fresh database from `ovsdb-tool create`). The
// insert is guarded by a wait for an empty table, so two callers make one.
func (c *Client) Init(ctx context.Context) error {
	_, err := c.Transact(ctx, DB,
		Wait("Open_vSwitch", nil, []string{}, "==", []Row{}, 0),
		Insert("Open_vSwitch", Row{}, ""))
	if err != nil && !IsTxError(err, "timed out") { // timed out: a row exists
		return fmt.Errorf("init database: %w", err)
	}
	return nil
}

// FindBridge reads the bridge named name; nil when there is none.
// Equivalent to `ovs-vsctl find Bridge name=NAME`.
func (c *Client) FindBridge(ctx context.Context, name string) (*Bridge, error) {
	return c.bridgeWhere(ctx, where("name", name))
}

// BridgeOfPort reads the bridge that holds the port; nil when none does.
// Equivalent to `ovs-vsctl port-to-br PORT`.
func (c *Client) BridgeOfPort(ctx context.Context, port UUID) (*Bridge, error) {
	return c.bridgeWhere(ctx, Cond("ports", "includes", port))
}

func (c *Client) bridgeWhere(ctx context.Context, cond Condition) (*Bridge, error) {
	bs, err := c.bridges(ctx, cond)
	if err != nil || len(bs) == 0 {
		return nil, err
	}
	return &bs[0], nil
}

// FindBridges reads every bridge whose external_ids include all of ids.
func (c *Client) FindBridges(ctx context.Context, ids Map) ([]Bridge, error) {
	return c.bridges(ctx, Cond("external_ids", "includes", mapOrEmpty(ids)))
}

func (c *Client) bridges(ctx context.Context, cond Condition) ([]Bridge, error) {
	res, err := c.Transact(ctx, DB, Select("Bridge", []string{"_uuid", "name", "datapath_type", "ports", "external_ids"}, cond))
	if err != nil {
		return nil, fmt.Errorf("find bridge: %w", err)
	}
	out := make([]Bridge, 0, len(res[0].Rows))
	for _, r := range res[0].Rows {
		out = append(out, Bridge{UUID: r.UUID("_uuid"), Name: r.String("name"), DatapathType: r.String("datapath_type"),
			Ports: r.UUIDs("ports"), ExternalIDs: r.Map("external_ids")})
	}
	return out, nil
}

// EnsureBridge makes the bridge with its internal port unless a bridge of
// that name exists, and returns it; created tells which. Equivalent to
//
//	ovs-vsctl --may-exist add-br NAME -- set Bridge NAME datapath_type=DP external_ids:K=V \
//	  -- set Port NAME tag=T -- set Interface NAME mtu_request=M
//
// in one transaction: insert the Interface, the Port referring to it, the
// Bridge referring to the Port, and mutate Open_vSwitch's bridges to
// include the Bridge. An existing bridge is returned as it is.
func (c *Client) EnsureBridge(ctx context.Context, s BridgeSpec) (*Bridge, bool, error) {
	if b, err := c.FindBridge(ctx, s.Name); err != nil || b != nil {
		return b, false, err
	}
	p := s.Port
	p.Name, p.Type = s.Name, "internal"
	res, err := c.Transact(ctx, DB,
		Insert("Interface", p.ifaceRow(), "iface"),
		Insert("Port", p.portRow(NamedUUID("iface")), "port"),
		Insert("Bridge", Row{"name": s.Name, "ports": NamedUUID("port"), "datapath_type": s.DatapathType,
			"external_ids": mapOrEmpty(s.ExternalIDs)}, "bridge"),
		Mutate("Open_vSwitch", []Mutation{Mut("bridges", "insert", NamedUUID("bridge"))}))
	if IsTxError(err, "constraint violation") { // made meanwhile (names are indexed)
		b, ferr := c.FindBridge(ctx, s.Name)
		if ferr == nil && b != nil {
			return b, false, nil
		}
	}
	if err != nil {
		return nil, false, fmt.Errorf("create bridge %q: %w", s.Name, err)
	}
	if res[3].Count == 0 { // nothing refers to the new rows: dropped at commit
		return nil, false, fmt.Errorf("create bridge %q: %w", s.Name, ErrNoRoot)
	}
	return &Bridge{UUID: res[2].UUID, Name: s.Name, DatapathType: s.DatapathType, Ports: []UUID{res[1].UUID},
		ExternalIDs: s.ExternalIDs}, true, nil
}

// DeleteBridge removes the bridge, its ports and their interfaces, unless
// its ports changed since b was read (ErrChanged: a port was added or
// removed meanwhile). A bridge that is gone is success. Equivalent to
// `ovs-vsctl --if-exists del-br NAME`, guarded by a wait on its ports.
func (c *Client) DeleteBridge(ctx context.Context, b *Bridge) error {
	ports := make(Set, 0, len(b.Ports))
	for _, p := range b.Ports {
		ports = append(ports, p)
	}
	_, err := c.Transact(ctx, DB,
		Wait("Bridge", []Condition{where("_uuid", b.UUID)}, []string{"ports"}, "==", []Row{{"ports": ports}}, 0),
		Mutate("Open_vSwitch", []Mutation{Mut("bridges", "delete", b.UUID)}))
	if IsTxError(err, "timed out") {
		now, ferr := c.bridgeWhere(ctx, where("_uuid", b.UUID))
		if ferr == nil && now == nil {
			return nil // gone already
		}
		return fmt.Errorf("delete bridge %q: %w", b.Name, ErrChanged)
	}
	if err != nil {
		return fmt.Errorf("delete bridge %q: %w", b.Name, err)
	}
	return nil
}

var portColumns = []string{"_uuid", "name", "tag", "protected", "interfaces", "external_ids"}

func portFromRow(r Row) Port {
	p := Port{UUID: r.UUID("_uuid"), Name: r.String("name"), Protected: r.Bool("protected"),
		Interfaces: r.UUIDs("interfaces"), ExternalIDs: r.Map("external_ids"), Tag: -1}
	if t, ok := r.Int("tag"); ok {
		p.Tag = t
	}
	return p
}

// FindPort reads the port named name; nil when there is none.
func (c *Client) FindPort(ctx context.Context, name string) (*Port, error) {
	res, err := c.Transact(ctx, DB, Select("Port", portColumns, where("name", name)))
	if err != nil {
		return nil, fmt.Errorf("find port %q: %w", name, err)
	}
	if len(res[0].Rows) == 0 {
		return nil, nil
	}
	p := portFromRow(res[0].Rows[0])
	return &p, nil
}

// AddPort adds a port with one interface of the same name to the bridge,
// or, when a port of that name is on the bridge already, sets its tag,
// protection and external IDs to s. Equivalent to
//
//	ovs-vsctl --may-exist add-port BRIDGE NAME tag=T protected=P external_ids:K=V \
//	  -- set Interface NAME type=TYPE mtu_request=M
//
// A port of that name on another bridge is an error; a bridge that does
// not exist is ErrNoBridge.
func (c *Client) AddPort(ctx context.Context, bridge string, s PortSpec) (*Port, error) {
	old, err := c.FindPort(ctx, s.Name)
	if err != nil {
		return nil, err
	}
	if old != nil {
		return c.updatePort(ctx, bridge, old, s)
	}
	res, err := c.Transact(ctx, DB,
		Insert("Interface", s.ifaceRow(), "iface"),
		Insert("Port", s.portRow(NamedUUID("iface")), "port"),
		Mutate("Bridge", []Mutation{Mut("ports", "insert", NamedUUID("port"))}, where("name", bridge)))
	if err != nil {
		return nil, fmt.Errorf("add port %q to bridge %q: %w", s.Name, bridge, err)
	}
	if res[2].Count == 0 {
		return nil, fmt.Errorf("add port %q to bridge %q: %w", s.Name, bridge, ErrNoBridge)
	}
	return &Port{UUID: res[1].UUID, Name: s.Name, Tag: max(s.Tag, -1), Protected: s.Protected,
		Interfaces: []UUID{res[0].UUID}, ExternalIDs: s.ExternalIDs}, nil
}

func (c *Client) updatePort(ctx context.Context, bridge string, old *Port, s PortSpec) (*Port, error) {
	b, err := c.BridgeOfPort(ctx, old.UUID)
	if err != nil {
		return nil, err
	}
	if b == nil || b.Name != bridge {
		on := "no bridge"
		if b != nil {
			on = fmt.Sprintf("bridge %q", b.Name)
		}
		return nil, fmt.Errorf("add port %q to bridge %q: a port of that name exists on %s", s.Name, bridge, on)
	}
	row := s.portRow(nil)
	delete(row, "interfaces")
	delete(row, "name")
	if _, err := c.Transact(ctx, DB, Update("Port", row, where("_uuid", old.UUID))); err != nil {
		return nil, fmt.Errorf("update port %q: %w", s.Name, err)
	}
	p := *old
	p.Tag, p.Protected, p.ExternalIDs = max(s.Tag, -1), s.Protected, s.ExternalIDs
	return &p, nil
}

// DeletePort removes the port (and its interfaces) from whichever bridge
// holds it. A port that is gone is success. Equivalent to
// `ovs-vsctl --if-exists del-port NAME`.
func (c *Client) DeletePort(ctx context.Context, port UUID) error {
	_, err := c.Transact(ctx, DB,
		Mutate("Bridge", []Mutation{Mut("ports", "delete", port)}, Cond("ports", "includes", port)))
	if err != nil {
		return fmt.Errorf("delete port %s: %w", port, err)
	}
	return nil
}

// ListPorts reads the ports of the bridge (its own internal port among
// them), in one transaction. Equivalent to `ovs-vsctl list-ports BRIDGE`
// with the details. A bridge that does not exist is ErrNoBridge.
func (c *Client) ListPorts(ctx context.Context, bridge string) ([]Port, error) {
	b, err := c.FindBridge(ctx, bridge)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, fmt.Errorf("list ports of %q: %w", bridge, ErrNoBridge)
	}
	if len(b.Ports) == 0 {
		return nil, nil
	}
	ops := make([]Op, 0, len(b.Ports))
	for _, u := range b.Ports {
		ops = append(ops, Select("Port", portColumns, where("_uuid", u)))
	}
	res, err := c.Transact(ctx, DB, ops...)
	if err != nil {
		return nil, fmt.Errorf("list ports of %q: %w", bridge, err)
	}
	var ports []Port
	for _, r := range res {
		for _, row := range r.Rows {
			ports = append(ports, portFromRow(row))
		}
	}
	slices.SortFunc(ports, func(a, b Port) int { return strings.Compare(a.Name, b.Name) })
	return ports, nil
}

// FindPorts reads every port whose external_ids include all of ids (the
// driver's ownership marks), on any bridge.
func (c *Client) FindPorts(ctx context.Context, ids Map) ([]Port, error) {
	res, err := c.Transact(ctx, DB, Select("Port", portColumns, Cond("external_ids", "includes", mapOrEmpty(ids))))
	if err != nil {
		return nil, fmt.Errorf("find ports: %w", err)
	}
	ports := make([]Port, 0, len(res[0].Rows))
	for _, row := range res[0].Rows {
		ports = append(ports, portFromRow(row))
	}
	return ports, nil
}

// InterfaceError reads the error ovs-vswitchd recorded for an interface
// ("" when none, or no such interface): why a port does not work
// (`could not open network device tov-1 (No such device)`).
func (c *Client) InterfaceError(ctx context.Context, name string) (string, error) {
	res, err := c.Transact(ctx, DB, Select("Interface", []string{"error"}, where("name", name)))
	if err != nil {
		return "", fmt.Errorf("interface %q: %w", name, err)
	}
	for _, r := range res[0].Rows {
		for _, a := range atoms(r["error"]) {
			if s, ok := a.(string); ok {
				return s, nil
			}
		}
	}
	return "", nil
}

// Applied waits until ovs-vswitchd has applied the database as it is now
// to the datapath (ports attached, internal devices created), as
// ovs-vsctl does after a change: it increments Open_vSwitch's next_cfg
// and waits for ovs-vswitchd to copy it to cur_cfg, polling every 10 ms
// until ctx ends. Without a running ovs-vswitchd it waits for ctx.
func (c *Client) Applied(ctx context.Context) error {
	res, err := c.Transact(ctx, DB,
		Mutate("Open_vSwitch", []Mutation{Mut("next_cfg", "+=", 1)}),
		Select("Open_vSwitch", []string{"next_cfg"}))
	if err != nil {
		return fmt.Errorf("bump next_cfg: %w", err)
	}
	if res[0].Count == 0 || len(res[1].Rows) == 0 {
		return ErrNoRoot
	}
	target, _ := res[1].Rows[0].Int("next_cfg")
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		res, err := c.Transact(ctx, DB, Select("Open_vSwitch", []string{"cur_cfg"}))
		if err != nil {
			return fmt.Errorf("read cur_cfg: %w", err)
		}
		if len(res[0].Rows) > 0 {
			if cur, _ := res[0].Rows[0].Int("cur_cfg"); cur >= target {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for ovs-vswitchd to apply the configuration (is it running?): %w", ctx.Err())
		case <-tick.C:
		}
	}
}
