package nlutil

// Route netlink requests that carry several changes in one message, for
// the attach path, where each request is a round trip through the rtnl
// lock (~20 µs here) and the netlink package has one call per change.
//
// One RTM_NEWLINK can create a veth pair with one end enslaved to a bridge
// and the other placed in a sandbox, and one RTM_NEWLINK on an existing
// link can set its bridge-port flags, its IPv6 address generation mode,
// its alias and bring it up (what `ip link set dev L up alias A
// addrgenmode none type bridge_slave hairpin on` sends). The kernel
// applies a request's changes under one hold of the rtnl lock, so nobody
// sees a link half changed by it.

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	tns "github.com/tether-net/tether/internal/netns"
)

// Conn is a route netlink socket bound to one network namespace.
type Conn struct {
	s *nl.NetlinkSocket
}

// OpenConn opens a Conn in the namespace at nsPath ("": the calling
// thread's, which for an unlocked goroutine is the process's own).
func OpenConn(nsPath string) (*Conn, error) {
	var (
		s   *nl.NetlinkSocket
		err error
	)
	if nsPath == "" {
		s, err = nl.GetNetlinkSocketAt(vnetns.None(), vnetns.None(), unix.NETLINK_ROUTE)
	} else {
		err = tns.Do(nsPath, func() error {
			var err error
			s, err = nl.GetNetlinkSocketAt(vnetns.None(), vnetns.None(), unix.NETLINK_ROUTE)
			return err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("route netlink socket in %q: %w", nsPath, err)
	}
	return &Conn{s: s}, nil
}

// Close closes the socket.
func (c *Conn) Close() { c.s.Close() }

// newRequest is a request the kernel acknowledges.
func newRequest(proto, flags int) *nl.NetlinkRequest {
	return nl.NewNetlinkRequest(proto, flags|unix.NLM_F_ACK)
}

// exec sends req and reads until its acknowledgement, returning the bodies
// of the messages of type resType that came before it (an NLM_F_ECHO's
// echo). Not NetlinkRequest.Execute: that stops at the first message that
// is not part of a dump, so after an echo it would leave the
// acknowledgement, and the error it may carry, unread.
func (c *Conn) exec(req *nl.NetlinkRequest, resType uint16) ([][]byte, error) {
	s := c.s
	if err := s.Send(req); err != nil {
		return nil, err
	}
	pid, err := s.GetPid()
	if err != nil {
		return nil, err
	}
	var res [][]byte
	for {
		msgs, from, err := s.Receive()
		if err != nil {
			return nil, err
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		for _, m := range msgs {
			if m.Header.Seq != req.Seq || m.Header.Pid != pid {
				continue // an answer to an earlier request
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return nil, errors.New("netlink: short acknowledgement")
				}
				if errno := int32(nl.NativeEndian().Uint32(m.Data[:4])); errno != 0 {
					return nil, unix.Errno(-errno)
				}
				return res, nil
			case resType:
				res = append(res, m.Data)
			}
		}
	}
}

// VethPair is a veth pair to create: the main end in the Conn's namespace,
// the peer in the namespace of PeerNS.
type VethPair struct {
	Name string
	MTU  int
	// Master is the ifindex of the bridge the main end is enslaved to as
	// it is created (0: none). The main end is created down.
	Master int
	Peer   string
	// PeerMAC is the peer's address (nil: random).
	PeerMAC net.HardwareAddr
	// PeerNS is a descriptor of the peer's namespace; < 0 keeps the peer
	// in the Conn's namespace. The peer is created down: a veth's peer
	// cannot be born up, its own peer is not yet linked to it then (the
	// kernel answers ENOTCONN).
	PeerNS int
	// Dormant gives the main end the operational state "dormant"
	// (IFLA_OPERSTATE) at birth instead of "unknown". A bridge enables a
	// port that comes up with its state up or unknown at once, in the
	// request that brings it up (br_device_event), and enabling a port
	// runs the bridge's port-state selection over every port; a new veth
	// stays "unknown" until the kernel's link watcher gets to it (a
	// batch at most once a second; an RTM_GETLINK of it runs it early).
	// A dormant port is enabled when its carrier comes on, by the link
	// watcher, as a port brought up without carrier is.
	Dormant bool
}

// vethPairMessage is the RTM_NEWLINK body creating p:
//
//	ip link add NAME mtu MTU master MASTER type veth peer name PEER mtu MTU [address MAC] [netns NS]
func vethPairMessage(p VethPair) []nl.NetlinkRequestData {
	data := []nl.NetlinkRequestData{
		nl.NewIfInfomsg(unix.AF_UNSPEC),
		nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(p.Name)),
	}
	if p.MTU > 0 {
		data = append(data, nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(p.MTU))))
	}
	if p.Master > 0 {
		data = append(data, nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(p.Master))))
	}
	if p.Dormant {
		data = append(data, nl.NewRtAttr(unix.IFLA_OPERSTATE, nl.Uint8Attr(uint8(netlink.OperDormant))))
	}
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("veth"))
	peer := info.AddRtAttr(nl.IFLA_INFO_DATA, nil).AddRtAttr(nl.VETH_INFO_PEER, nil)
	nl.NewIfInfomsgChild(peer, unix.AF_UNSPEC)
	peer.AddRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(p.Peer))
	if p.MTU > 0 {
		peer.AddRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(p.MTU)))
	}
	if len(p.PeerMAC) > 0 {
		peer.AddRtAttr(unix.IFLA_ADDRESS, []byte(p.PeerMAC))
	}
	if p.PeerNS >= 0 {
		peer.AddRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(p.PeerNS)))
	}
	return append(data, info)
}

// AddVethPair creates p in one request and returns the peer's ifindex in
// its namespace, read from the kernel's echo of the new link (NLM_F_ECHO:
// its IFLA_LINK), so the caller need not look the peer up; 0 when the
// kernel sent no echo (older kernels do not echo a new link). An existing
// name fails with EEXIST; a Master that names no link with EINVAL (or
// ENODEV), and then nothing is left.
func (c *Conn) AddVethPair(p VethPair) (int, error) {
	if p.Name == "" || p.Peer == "" {
		return 0, errors.New("veth pair: both ends need a name")
	}
	req := newRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ECHO)
	for _, d := range vethPairMessage(p) {
		req.AddData(d)
	}
	msgs, err := c.exec(req, unix.RTM_NEWLINK)
	if err != nil {
		return 0, fmt.Errorf("create veth %s/%s: %w", p.Name, p.Peer, err)
	}
	for _, m := range msgs {
		if idx := linkOf(m, p.Name); idx > 0 {
			return idx, nil
		}
	}
	return 0, nil
}

// linkOf is the IFLA_LINK (a veth's peer's ifindex) of an RTM_NEWLINK body
// about the link named name; 0 when it is about another link or has none.
func linkOf(m []byte, name string) int {
	if len(m) < unix.SizeofIfInfomsg {
		return 0
	}
	as, err := nl.ParseRouteAttr(m[unix.SizeofIfInfomsg:])
	if err != nil {
		return 0
	}
	var (
		idx   int
		named bool
	)
	for _, a := range as {
		switch a.Attr.Type {
		case unix.IFLA_IFNAME:
			named = strings.TrimRight(string(a.Value), "\x00") == name
		case unix.IFLA_LINK:
			if len(a.Value) == 4 {
				idx = int(nl.NativeEndian().Uint32(a.Value))
			}
		}
	}
	if !named {
		return 0
	}
	return idx
}

// PortFlags are a bridge port's flags to set (IFLA_BRPORT_*).
type PortFlags struct {
	Hairpin  bool
	Isolated bool
}

// LinkChange is a set of changes to an existing link, applied by one
// request in this order (the kernel's): the bridge-port flags, the alias,
// up, the IPv6 address generation mode.
type LinkChange struct {
	// Port, when set, is applied to the link as a port of its bridge
	// (the link must be enslaved already).
	Port *PortFlags
	// Alias (ifalias) when not "".
	Alias string
	Up    bool
	// AddrGenModeNone: IN6_ADDR_GEN_MODE_NONE, no link-local address
	// (the request fails on a kernel without IPv6).
	AddrGenModeNone bool
}

// linkChangeMessage is the RTM_NEWLINK body applying ch to the link named
// name:
//
//	ip link set dev NAME [up] [alias A] [addrgenmode none] [type bridge_slave hairpin H isolated I]
func linkChangeMessage(name string, ch LinkChange) []nl.NetlinkRequestData {
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	if ch.Up {
		msg.Flags, msg.Change = unix.IFF_UP, unix.IFF_UP
	}
	data := []nl.NetlinkRequestData{msg, nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name))}
	if ch.Alias != "" {
		data = append(data, nl.NewRtAttr(unix.IFLA_IFALIAS, []byte(ch.Alias)))
	}
	if ch.AddrGenModeNone {
		af := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
		af.AddRtAttr(unix.AF_INET6, nil).AddRtAttr(unix.IFLA_INET6_ADDR_GEN_MODE, nl.Uint8Attr(addrGenModeNone))
		data = append(data, af)
	}
	if ch.Port != nil {
		info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
		info.AddRtAttr(nl.IFLA_INFO_SLAVE_KIND, nl.NonZeroTerminated("bridge"))
		port := info.AddRtAttr(nl.IFLA_INFO_SLAVE_DATA, nil)
		port.AddRtAttr(nl.IFLA_BRPORT_MODE, boolAttr(ch.Port.Hairpin))
		port.AddRtAttr(nl.IFLA_BRPORT_ISOLATED, boolAttr(ch.Port.Isolated))
		data = append(data, info)
	}
	return data
}

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE.
const addrGenModeNone = 1

func boolAttr(b bool) []byte {
	if b {
		return nl.Uint8Attr(1)
	}
	return nl.Uint8Attr(0)
}

// ChangeLink applies ch to the link named name in one request. A link
// that does not exist fails with ENODEV.
func (c *Conn) ChangeLink(name string, ch LinkChange) error {
	req := newRequest(unix.RTM_NEWLINK, 0)
	for _, d := range linkChangeMessage(name, ch) {
		req.AddData(d)
	}
	if _, err := c.exec(req, 0); err != nil {
		return fmt.Errorf("change link %q: %w", name, err)
	}
	return nil
}

// DeleteLink deletes the link named name (a veth: both ends). One that
// does not exist fails with ENODEV.
func (c *Conn) DeleteLink(name string) error {
	req := newRequest(unix.RTM_DELLINK, 0)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	if _, err := c.exec(req, 0); err != nil {
		return fmt.Errorf("delete link %q: %w", name, err)
	}
	return nil
}

// ConnPool holds idle Conns bound to the namespace at a path ("" for the
// process's own), like HandlePool.
type ConnPool struct {
	ns   string
	idle idlePool[*Conn]
}

// NewConnPool returns a pool of Conns bound to the namespace at nsPath.
func NewConnPool(nsPath string) *ConnPool { return &ConnPool{ns: nsPath} }

// Get returns an idle Conn, or a new one.
func (p *ConnPool) Get() (*Conn, error) {
	if c, ok := p.idle.take(); ok {
		return c, nil
	}
	return OpenConn(p.ns)
}

// Put gives back a Conn Get returned; beyond maxIdle idle ones it is
// closed.
func (p *ConnPool) Put(c *Conn) {
	if !p.idle.keep(c) {
		c.Close()
	}
}
