package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/netaddr"
	"github.com/tether-net/tether/internal/store"
)

// The watcher turns what it reads back from etcd/ZooKeeper into calls that
// program the kernel (a VXLAN device per network, FDB and neighbour entries
// per peer). Any node, or anyone with write access to the store, can put
// any bytes there: these tests feed it hostile and corrupted records and
// check that none crashes the daemon and none reaches the listener unless
// the kernel may be programmed with it.

// fuzzSelf is the node the fuzzed watcher runs on.
var fuzzSelf = Node{ID: "self", Name: "self", Addr: netip.MustParseAddr("198.18.0.1"), Port: 2376}

// checkingListener fails the test on a NetworkAdded or PeerAdded that the
// kernel must not be programmed with. Its rules are written out here, apart
// from the product's checks, so that the test cannot agree with a wrong
// check by construction.
type checkingListener struct {
	t     testing.TB
	nodes map[string]netip.Addr // node ID -> advertised address, as registered
	nets  map[string]NetworkRecord
	peers int
}

func (l *checkingListener) NetworkAdded(n NetworkRecord) {
	l.t.Helper()
	if err := wantNetwork(n); err != nil {
		l.t.Errorf("hostile network record reached the listener: %v: %+v", err, n)
	}
	l.nets[n.ID] = n
}

func (l *checkingListener) NetworkRemoved(n NetworkRecord) { delete(l.nets, n.ID) }
func (l *checkingListener) PeerRemoved(EndpointRecord)     { l.peers-- }

func (l *checkingListener) PeerAdded(ep EndpointRecord) {
	l.t.Helper()
	l.peers++
	n, ok := l.nets[ep.NetworkID]
	if !ok {
		l.t.Errorf("peer %s added before (or without) its network %s", ep.ID, ep.NetworkID)
		return
	}
	if err := wantPeer(n, ep, l.nodes); err != nil {
		l.t.Errorf("hostile endpoint record reached the listener: %v: %+v", err, ep)
	}
}

// wantNetwork is what the overlay driver and the bridge need of a network.
func wantNetwork(n NetworkRecord) error {
	s := n.Subnet
	last := func(p netip.Prefix) netip.Addr {
		b := p.Addr().As4()
		for i := p.Bits(); i < 32; i++ {
			b[i/8] |= 1 << (7 - i%8)
		}
		return netip.AddrFrom4(b)
	}
	switch {
	case n.ID == "":
		return fmt.Errorf("no ID")
	case n.VNI < 1 || n.VNI > 1<<24-1:
		return fmt.Errorf("VNI %d out of 1..2^24-1", n.VNI)
	case !s.IsValid() || !s.Addr().Is4() || s != s.Masked() || s.Bits() < 8 || s.Bits() > 30:
		return fmt.Errorf("subnet %v not an IPv4 network /8../30", s)
	case !n.Gateway.Is4() || !s.Contains(n.Gateway) || n.Gateway == s.Addr() || n.Gateway == last(s):
		return fmt.Errorf("gateway %v not a host address of %v", n.Gateway, s)
	}
	return wantNetwork6(n)
}

// wantNetwork6: no IPv6 side, or an IPv6 /48../124 subnet with host bits
// clear and room for every IPv4 offset, and a gateway in it that no
// endpoint's derived address can be (the IPv4 gateway's offset or one
// past the IPv4 subnet's size).
func wantNetwork6(n NetworkRecord) error {
	s6, g := n.Subnet6, n.Gateway6
	if !s6.IsValid() {
		if g.IsValid() {
			return fmt.Errorf("gateway6 %v without subnet6", g)
		}
		return nil
	}
	switch {
	case !s6.Addr().Is6() || s6.Addr().Is4In6() || s6.Addr().Zone() != "" || s6 != s6.Masked() || s6.Bits() < 48 || s6.Bits() > 124:
		return fmt.Errorf("subnet6 %v not an IPv6 network /48../124", s6)
	case 128-s6.Bits() < 32-n.Subnet.Bits():
		return fmt.Errorf("subnet6 %v smaller than %v", s6, n.Subnet)
	case !g.Is6() || g.Is4In6() || g.Zone() != "" || !s6.Contains(g) || g == s6.Addr():
		return fmt.Errorf("gateway6 %v not a host address of %v", g, s6)
	}
	off := new(big.Int).Sub(bigOf(g), bigOf(s6.Addr()))
	size := big.NewInt(1 << (32 - n.Subnet.Bits()))
	if off.Cmp(size) < 0 && g != derive6(n.Subnet, s6, n.Gateway) {
		return fmt.Errorf("gateway6 %v at offset %v, an IPv4 address's", g, off)
	}
	return nil
}

func bigOf(a netip.Addr) *big.Int { b := a.As16(); return new(big.Int).SetBytes(b[:]) }

// derive6 adds a's offset in s to s6's first address, with big integers.
func derive6(s, s6 netip.Prefix, a netip.Addr) netip.Addr {
	b4, a4 := s.Addr().As4(), a.As4()
	off := new(big.Int).Sub(new(big.Int).SetBytes(a4[:]), new(big.Int).SetBytes(b4[:]))
	var out [16]byte
	new(big.Int).Add(bigOf(s6.Addr()), off).FillBytes(out[:])
	return netip.AddrFrom16(out)
}

// wantPeer is what AddPeer needs, plus what only the cluster knows: the
// address is a host of the network's subnet (not its gateway) and the VTEP
// is the advertised address of the node the record names (a VTEP equal to
// this host's is the overlay driver's to refuse).
func wantPeer(n NetworkRecord, ep EndpointRecord, nodes map[string]netip.Addr) error {
	a := ep.Address.Addr()
	mac, err := net.ParseMAC(ep.MAC)
	switch {
	case ep.ID == "":
		return fmt.Errorf("no ID")
	case !a.Is4() || !n.Subnet.Contains(a) || a == n.Subnet.Addr() || a == n.Gateway || ep.Address.Bits() != n.Subnet.Bits():
		return fmt.Errorf("address %v not a host of %v", ep.Address, n.Subnet)
	case n.Subnet.Bits() < 31 && a == netaddr.Last(n.Subnet):
		return fmt.Errorf("address %v is the broadcast of %v", a, n.Subnet)
	case err != nil || len(mac) != 6 || mac[0]&1 != 0 || bytes.Equal(mac, make([]byte, 6)):
		return fmt.Errorf("MAC %q not a unicast Ethernet address", ep.MAC)
	case ep.VTEP.Is4() && (ep.VTEP.IsLoopback() || ep.VTEP.IsUnspecified() ||
		ep.VTEP.IsMulticast() || ep.VTEP == netip.AddrFrom4([4]byte{255, 255, 255, 255})):
		return fmt.Errorf("VTEP %v not a remote unicast IPv4 address", ep.VTEP)
	case !ep.VTEP.Is4() && (!ep.VTEP.Is6() || ep.VTEP.Is4In6() || ep.VTEP.Zone() != "" || ep.VTEP.IsLoopback() ||
		ep.VTEP.IsUnspecified() || ep.VTEP.IsMulticast() || ep.VTEP.IsLinkLocalUnicast()):
		return fmt.Errorf("VTEP %v not a global unicast IPv6 address", ep.VTEP)
	case nodes[ep.Node] != ep.VTEP:
		return fmt.Errorf("VTEP %v is not node %q's address %v", ep.VTEP, ep.Node, nodes[ep.Node])
	case ep.Address6.IsValid() && (!n.Subnet6.IsValid() || ep.Address6 != netip.PrefixFrom(derive6(n.Subnet, n.Subnet6, a), n.Subnet6.Bits())):
		return fmt.Errorf("address6 %v is not %v's in %v", ep.Address6, a, n.Subnet6)
	}
	return nil
}

// feedRecords puts one node, one network and one endpoint record (raw
// values, as read from the store) into a watcher and applies them, then
// deletes them again. It returns how many peers the listener was given.
func feedRecords(t testing.TB, nodeVal, netVal, epVal []byte) int {
	t.Helper()
	c := &Cluster{self: fuzzSelf, log: slog.New(slog.DiscardHandler)}
	l := &checkingListener{t: t, nodes: map[string]netip.Addr{}, nets: map[string]NetworkRecord{}}
	var nd Node
	if json.Unmarshal(nodeVal, &nd) == nil {
		l.nodes["other"] = nd.Addr
	}
	w := NewWatcher(c, l)
	kvs := []store.KV{
		{Key: keyNodes + "other", Value: nodeVal},
		{Key: keyNetworks + "net", Value: netVal},
		{Key: keyEndpoints + "net/ep", Value: epVal},
	}
	for i, kv := range kvs {
		kv.Revision = int64(i + 1)
		w.record(store.Event{Type: store.EventPut, KV: kv})
	}
	w.apply()
	added := l.peers
	for i, kv := range kvs {
		kv.Revision = int64(len(kvs) + i + 1)
		w.record(store.Event{Type: store.EventDelete, KV: kv})
	}
	w.apply()
	if len(l.nets) != 0 || l.peers != 0 {
		t.Errorf("after deleting every record the listener still has %d networks and %d peers", len(l.nets), l.peers)
	}
	return added
}

// A well-formed record set, the base of the seeds and of the field fuzzer.
const (
	goodNode = `{"id":"other","name":"host-b","addr":"198.18.0.2","port":2376,"startedAt":"2026-01-01T00:00:00Z"}`
	goodNet  = `{"id":"net","name":"ov","driver":"overlay","vni":4096,"subnet":"10.99.0.0/24","gateway":"10.99.0.1","created":"2026-01-01T00:00:00Z","createdBy":"other"}`
	goodEp   = `{"id":"ep","networkId":"net","node":"other","nodeName":"host-b","vtep":"198.18.0.2","sandboxId":"s1","sandboxName":"web","address":"10.99.0.2/24","mac":"02:42:0a:63:00:02","created":"2026-01-01T00:00:00Z"}`
	// dual stack
	goodNet6 = `{"id":"net","name":"ov","driver":"overlay","vni":4096,"subnet":"10.99.0.0/24","gateway":"10.99.0.1","subnet6":"fd00:99::/64","gateway6":"fd00:99::1","created":"2026-01-01T00:00:00Z","createdBy":"other"}`
	goodEp6  = `{"id":"ep","networkId":"net","node":"other","nodeName":"host-b","vtep":"198.18.0.2","sandboxId":"s1","sandboxName":"web","address":"10.99.0.2/24","address6":"fd00:99::2/64","mac":"02:42:0a:63:00:02","created":"2026-01-01T00:00:00Z"}`
)

// FuzzWatcherRecordBytes: arbitrary bytes as the values of a node, a
// network and an endpoint key.
func FuzzWatcherRecordBytes(f *testing.F) {
	f.Add([]byte(goodNode), []byte(goodNet), []byte(goodEp))
	f.Add([]byte(goodNode), []byte(goodNet), []byte(`{}`))
	f.Add([]byte(`null`), []byte(`null`), []byte(`null`))
	f.Add([]byte(goodNode), []byte(`{"id":"net","vni":-1,"subnet":"0.0.0.0/0"}`), []byte(goodEp))
	f.Add([]byte(goodNode), []byte(goodNet), []byte(`{"id":"ep","networkId":"net","node":"other","vtep":"127.0.0.1","address":"8.8.8.8/32","mac":"ff:ff:ff:ff:ff:ff"}`))
	f.Add([]byte(goodNode), []byte(goodNet[:40]), []byte(goodEp[:40]))
	f.Add([]byte(goodNode), []byte(goodNet6), []byte(goodEp6))
	f.Add([]byte(goodNode), []byte(goodNet), []byte(goodEp6))
	f.Add([]byte(goodNode), []byte(goodNet6), []byte(strings.Replace(goodEp6, "fd00:99::2/64", "fd00:99::1/64", 1)))
	f.Add([]byte(goodNode), []byte(strings.Replace(goodNet6, "fd00:99::/64", "::/0", 1)), []byte(goodEp6))
	f.Add([]byte(goodNode), []byte(strings.Replace(goodNet6, "fd00:99::/64", "fd00:99::/125", 1)), []byte(goodEp6))
	f.Fuzz(func(t *testing.T, nodeVal, netVal, epVal []byte) {
		feedRecords(t, nodeVal, netVal, epVal)
	})
}

// FuzzWatcherRecordFields: well-formed JSON with fuzzed values in the fields
// that reach the kernel (VNI, subnet, gateway, address, MAC, VTEP, node
// address), so the fuzzer spends its time past the JSON decoder.
func FuzzWatcherRecordFields(f *testing.F) {
	f.Add(4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2")
	f.Add(0, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2")
	f.Add(1<<24, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2")
	f.Add(4096, "10.99.0.0/24", "10.99.0.1", "192.168.1.1/24", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2")
	f.Add(4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.1/24", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2")
	f.Add(4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.255/24", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2")
	f.Add(4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "01:00:5e:00:00:01", "198.18.0.2", "198.18.0.2")
	f.Add(4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "00:00:00:00:00:00", "198.18.0.2", "198.18.0.2")
	f.Add(4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02:00:00", "198.18.0.2", "198.18.0.2")
	f.Add(4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "203.0.113.66", "198.18.0.2")
	f.Add(4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "198.18.0.1", "198.18.0.1")
	f.Add(4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "::1", "::1")
	f.Add(4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "fd99::11", "fd99::11")
	f.Add(4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "fe80::1", "fe80::1")
	f.Add(4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "fe80::1%eth0", "fe80::1%eth0")
	f.Add(4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "::ffff:198.18.0.2", "::ffff:198.18.0.2")
	f.Add(4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "ff02::1", "ff02::1")
	f.Add(4096, "10.99.0.5/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2")
	f.Add(4096, "0.0.0.0/0", "0.0.0.1", "10.99.0.2/0", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2")
	f.Add(4096, "fd00::/64", "fd00::1", "fd00::2/64", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2")
	f.Add(4096, "10.99.0.0/24", "10.98.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2")
	f.Fuzz(func(t *testing.T, vni int, subnet, gateway, addr, mac, vtep, nodeAddr string) {
		q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
		node := fmt.Sprintf(`{"id":"other","name":"host-b","addr":%s}`, q(nodeAddr))
		nw := fmt.Sprintf(`{"id":"net","name":"ov","vni":%d,"subnet":%s,"gateway":%s}`, vni, q(subnet), q(gateway))
		ep := fmt.Sprintf(`{"id":"ep","networkId":"net","node":"other","vtep":%s,"sandboxName":"web","address":%s,"mac":%s}`, q(vtep), q(addr), q(mac))
		feedRecords(t, []byte(node), []byte(nw), []byte(ep))
	})
}

// FuzzWatcherRecordFields6: a dual-stack network and endpoint with fuzzed
// IPv6 fields (and IPv4 ones, as the derivation depends on both).
func FuzzWatcherRecordFields6(f *testing.F) {
	f.Add("10.99.0.0/24", "10.99.0.1", "fd00:99::/64", "fd00:99::1", "10.99.0.2/24", "fd00:99::2/64")
	f.Add("10.99.0.0/24", "10.99.0.1", "fd00:99::/64", "fd00:99::1", "10.99.0.2/24", "")
	f.Add("10.99.0.0/24", "10.99.0.1", "", "", "10.99.0.2/24", "fd00:99::2/64")
	f.Add("10.99.0.0/24", "10.99.0.1", "fd00:99::/64", "fd00:99::1", "10.99.0.2/24", "fd00:99::1/64")
	f.Add("10.99.0.0/24", "10.99.0.1", "fd00:99::/64", "fd00:99::1", "10.99.0.2/24", "fd00:99::2/128")
	f.Add("10.99.0.0/24", "10.99.0.1", "fd00:99::/64", "fd00:99::2", "10.99.0.2/24", "fd00:99::2/64")
	f.Add("10.99.0.0/24", "10.99.0.1", "fd00:99::/64", "fd00:99::1:0", "10.99.0.2/24", "fd00:99::2/64")
	f.Add("10.0.0.0/8", "10.0.0.1", "fd00:99::/104", "fd00:99::1", "10.1.2.3/8", "fd00:99::1:203/104")
	f.Add("10.0.0.0/8", "10.0.0.1", "fd00:99::/105", "fd00:99::1", "10.1.2.3/8", "fd00:99::1:203/105")
	f.Add("10.99.0.0/24", "10.99.0.1", "fd00:99::1/64", "fd00:99::1", "10.99.0.2/24", "fd00:99::2/64")
	f.Add("10.99.0.0/24", "10.99.0.1", "::ffff:10.99.0.0/120", "::ffff:10.99.0.1", "10.99.0.2/24", "::ffff:10.99.0.2/120")
	f.Add("10.99.0.0/24", "10.99.0.1", "fe80::/64", "fe80::1%eth0", "10.99.0.2/24", "fe80::2/64")
	f.Add("10.99.0.0/24", "10.99.0.1", "::/0", "::1", "10.99.0.2/24", "::2/0")
	f.Fuzz(func(t *testing.T, subnet, gateway, subnet6, gateway6, addr, addr6 string) {
		q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
		nw := fmt.Sprintf(`{"id":"net","name":"ov","vni":4096,"subnet":%s,"gateway":%s,"subnet6":%s,"gateway6":%s}`, q(subnet), q(gateway), q(subnet6), q(gateway6))
		ep := fmt.Sprintf(`{"id":"ep","networkId":"net","node":"other","vtep":"198.18.0.2","sandboxName":"web","address":%s,"address6":%s,"mac":"02:42:0a:63:00:02"}`, q(addr), q(addr6))
		feedRecords(t, []byte(goodNode), []byte(nw), []byte(ep))
	})
}

// TestWatcherRejectsHostileRecords: each record below was accepted (and
// would have been programmed into the kernel) before the watcher checked
// records; the good one still goes through.
func TestWatcherRejectsHostileRecords(t *testing.T) {
	tests := []struct {
		name                       string
		vni                        int
		subnet, gateway, addr, mac string
		vtep, nodeAddr             string
		wantPeer                   bool
	}{
		{"good", 4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2", true},
		{"VNI 0", 0, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2", false},
		{"VNI 2^24", 1 << 24, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2", false},
		{"subnet /0", 4096, "0.0.0.0/0", "0.0.0.1", "10.99.0.2/0", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2", false},
		{"IPv6 subnet", 4096, "fd00::/64", "fd00::1", "fd00::2/64", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2", false},
		{"gateway outside", 4096, "10.99.0.0/24", "10.98.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2", false},
		{"address outside the subnet", 4096, "10.99.0.0/24", "10.99.0.1", "192.168.1.1/24", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2", false},
		{"address is the gateway", 4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.1/24", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2", false},
		{"address is the broadcast", 4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.255/24", "02:42:0a:63:00:02", "198.18.0.2", "198.18.0.2", false},
		{"multicast MAC", 4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "01:00:5e:00:00:01", "198.18.0.2", "198.18.0.2", false},
		{"long MAC", 4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02:00:00", "198.18.0.2", "198.18.0.2", false},
		{"VTEP not the node's", 4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "203.0.113.66", "198.18.0.2", false},
		{"VTEP loopback", 4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "127.0.0.1", "127.0.0.1", false},
		{"VTEP multicast", 4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "239.1.1.1", "239.1.1.1", false},
		{"IPv6 VTEP (IPv6 underlay)", 4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "fd99::11", "fd99::11", true},
		{"VTEP IPv6 loopback", 4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "::1", "::1", false},
		{"VTEP IPv6 link-local", 4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "fe80::1", "fe80::1", false},
		{"VTEP IPv4-mapped", 4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "::ffff:198.18.0.2", "::ffff:198.18.0.2", false},
		{"node record unreadable", 4096, "10.99.0.0/24", "10.99.0.1", "10.99.0.2/24", "02:42:0a:63:00:02", "198.18.0.2", "not an address", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
			node := fmt.Sprintf(`{"id":"other","name":"host-b","addr":%s}`, q(tt.nodeAddr))
			nw := fmt.Sprintf(`{"id":"net","name":"ov","vni":%d,"subnet":%s,"gateway":%s}`, tt.vni, q(tt.subnet), q(tt.gateway))
			ep := fmt.Sprintf(`{"id":"ep","networkId":"net","node":"other","vtep":%s,"sandboxName":"web","address":%s,"mac":%s}`, q(tt.vtep), q(tt.addr), q(tt.mac))
			if got := feedRecords(t, []byte(node), []byte(nw), []byte(ep)); (got == 1) != tt.wantPeer {
				t.Errorf("peers given to the listener = %d, want the peer: %v", got, tt.wantPeer)
			}
		})
	}
}

// A record stored under a key that is not its own could stand in for
// another network or endpoint: both are ignored.
func TestWatcherRejectsRecordUnderAnotherKey(t *testing.T) {
	nw := strings.Replace(goodNet, `"id":"net"`, `"id":"other-net"`, 1)
	ep := strings.Replace(goodEp, `"networkId":"net"`, `"networkId":"other-net"`, 1)
	if got := feedRecords(t, []byte(goodNode), []byte(nw), []byte(ep)); got != 0 {
		t.Errorf("peers given to the listener = %d, want 0", got)
	}
	if got := feedRecords(t, []byte(goodNode), []byte(goodNet), []byte(goodEp)); got != 1 {
		t.Errorf("the well-formed records gave %d peers, want 1", got)
	}
}

// Dual-stack records: the well-formed pair gives a peer; an IPv6 address
// that is not the derived one, or on a network without subnet6, and a
// network whose IPv6 side is malformed, give none.
func TestWatcherDualStackRecords(t *testing.T) {
	tests := []struct {
		name     string
		nw, ep   string
		wantPeer bool
	}{
		{"good", goodNet6, goodEp6, true},
		{"IPv4-only endpoint on a dual-stack network", goodNet6, goodEp, true},
		{"address6 on an IPv4-only network", goodNet, goodEp6, false},
		{"address6 not the derived one", goodNet6, strings.Replace(goodEp6, "fd00:99::2/64", "fd00:99::3/64", 1), false},
		{"address6 the gateway's", goodNet6, strings.Replace(goodEp6, "fd00:99::2/64", "fd00:99::1/64", 1), false},
		{"address6 with another prefix length", goodNet6, strings.Replace(goodEp6, "fd00:99::2/64", "fd00:99::2/128", 1), false},
		{"subnet6 too small", strings.Replace(goodNet6, "fd00:99::/64", "fd00:99::/125", 1), goodEp, false},
		{"subnet6 not canonical", strings.Replace(goodNet6, "fd00:99::/64", "fd00:99::1/64", 1), goodEp, false},
		{"gateway6 outside", strings.Replace(goodNet6, `"gateway6":"fd00:99::1"`, `"gateway6":"fd00:98::1"`, 1), goodEp, false},
		{"gateway6 an endpoint's", strings.Replace(goodNet6, `"gateway6":"fd00:99::1"`, `"gateway6":"fd00:99::2"`, 1), goodEp, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := feedRecords(t, []byte(goodNode), []byte(tt.nw), []byte(tt.ep)); (got == 1) != tt.wantPeer {
				t.Errorf("peers given to the listener = %d, want the peer: %v", got, tt.wantPeer)
			}
		})
	}
}
