package doctor

import (
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"time"
)

// fakeKernel is a Kernel held in maps; a zero value is an empty host.
type fakeKernel struct {
	sysctls map[string]string
	routes  []Route
	links   []Link
	addrs   map[netip.Addr]string // address -> link name
	fdb     map[string][]FDB
	neigh   map[string][]Neigh
	chains  []Chain
	tables  map[string]*Table // "ip tether"
	err     error             // returned by every read when set
}

func (k *fakeKernel) Sysctl(key string) (string, error) {
	v, ok := k.sysctls[key]
	if !ok {
		return "", fs.ErrNotExist
	}
	return v, k.err
}

func (k *fakeKernel) Routes() ([]Route, error) { return k.routes, k.err }

func (k *fakeKernel) Link(name string) (*Link, error) {
	for i := range k.links {
		if k.links[i].Name == name {
			l := k.links[i]
			return &l, k.err
		}
	}
	return nil, k.err
}

func (k *fakeKernel) LinkByIndex(i int) (*Link, error) {
	for _, l := range k.links {
		if l.Index == i {
			return &l, k.err
		}
	}
	return nil, k.err
}

func (k *fakeKernel) LinkWithAddr(a netip.Addr) (*Link, error) { return k.Link(k.addrs[a]) }

func (k *fakeKernel) FDB(dev string) ([]FDB, error) {
	if l, _ := k.Link(dev); l == nil {
		return nil, errors.New("no link " + dev)
	}
	return k.fdb[dev], k.err
}

func (k *fakeKernel) Neighbours(dev string) ([]Neigh, error) {
	if l, _ := k.Link(dev); l == nil {
		return nil, errors.New("no link " + dev)
	}
	return k.neigh[dev], k.err
}

func (k *fakeKernel) ForwardChains() ([]Chain, error) { return k.chains, k.err }

func (k *fakeKernel) Table(family, name string) (*Table, error) {
	return k.tables[family+" "+name], k.err
}

// fakeProber answers for the servers in up, fails the others.
type fakeProber struct{ up map[netip.AddrPort]bool }

func (p fakeProber) Probe(_ context.Context, s netip.AddrPort) error {
	if p.up[s] {
		return nil
	}
	return errors.New("no answer")
}

// A healthy host: one bridge network "app" (bridge tth-app, 10.20.0.0/24)
// with sandboxes web and db, an internal network "back" (tth-back) with
// sandbox cache, forwarding on, Tether's table complete, one upstream
// answering.
var (
	upstream = netip.MustParseAddrPort("192.0.2.53:53")
	created  = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
)

func healthyState() *State {
	return &State{
		Firewall: true,
		Networks: []Network{
			{ID: "n1", Name: "app", Driver: "bridge", Bridge: "tth-app", Subnet: netip.MustParsePrefix("10.20.0.0/24"), Created: created, Firewalled: true, ICC: true, Masquerade: true},
			{ID: "n2", Name: "back", Driver: "bridge", Bridge: "tth-back", Subnet: netip.MustParsePrefix("10.30.0.0/24"), Created: created, Firewalled: true, Internal: true, ICC: true},
		},
		Sandboxes: []Sandbox{
			{ID: "s1", Name: "web", Endpoints: []Endpoint{{NetworkID: "n1", HostIf: "veth-web", Address: netip.MustParsePrefix("10.20.0.2/24")}}},
			{ID: "s2", Name: "db", Endpoints: []Endpoint{{NetworkID: "n1", HostIf: "veth-db", Address: netip.MustParsePrefix("10.20.0.3/24")}}},
			{ID: "s3", Name: "cache", Endpoints: []Endpoint{{NetworkID: "n2", HostIf: "veth-cache", Address: netip.MustParsePrefix("10.30.0.2/24")}}},
		},
		Upstreams: []netip.AddrPort{upstream},
	}
}

func tetherTable(fam string) *Table {
	t := &Table{Family: fam, Name: "tether", Sets: map[string][]string{"bridges": {"tth-app", "tth-back"}, "internal": {"tth-back"}}}
	for _, w := range tableWant {
		c := Chain{Family: fam, Table: "tether", Name: w.chain, Hook: w.hook, Type: w.typ, Policy: "accept"}
		for _, cmt := range w.rules {
			c.Rules = append(c.Rules, Rule{Comment: cmt, Other: true, Verdict: "drop"})
		}
		t.Chains = append(t.Chains, c)
	}
	return t
}

func healthyKernel() *fakeKernel {
	return &fakeKernel{
		sysctls: map[string]string{"net/ipv4/ip_forward": "1"},
		routes: []Route{
			{Dst: netip.MustParsePrefix("10.20.0.0/24"), Dev: "tth-app", Table: 254, Type: "unicast"},
			{Dst: netip.MustParsePrefix("10.30.0.0/24"), Dev: "tth-back", Table: 254, Type: "unicast"},
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "eth0", Via: netip.MustParseAddr("192.0.2.1"), Table: 254, Type: "unicast"},
			{Dst: netip.MustParsePrefix("10.20.0.1/32"), Dev: "tth-app", Table: 255, Type: "local"},
		},
		links: []Link{
			{Name: "eth0", Index: 2, MTU: 1500, Up: true},
			{Name: "tth-app", Index: 10, MTU: 1500, Up: true, Kind: "bridge"},
			{Name: "tth-back", Index: 11, MTU: 1500, Up: true, Kind: "bridge"},
			{Name: "veth-web", Index: 20, MTU: 1500, Up: true, Kind: "veth", MasterIndex: 10},
			{Name: "veth-db", Index: 21, MTU: 1500, Up: true, Kind: "veth", MasterIndex: 10},
			{Name: "veth-cache", Index: 22, MTU: 1500, Up: true, Kind: "veth", MasterIndex: 11},
		},
		tables: map[string]*Table{"ip tether": tetherTable("ip")},
		chains: []Chain{tetherTable("ip").Chains[1]},
	}
}

func newTestDoctor(k *fakeKernel) *Doctor {
	return &Doctor{K: k, P: fakeProber{up: map[netip.AddrPort]bool{upstream: true}}}
}
