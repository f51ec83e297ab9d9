package testutil

import (
	"fmt"

	"github.com/vishvananda/netlink/nl"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Bridge port states (BR_STATE_*).
const (
	BridgePortDisabled   = 0
	BridgePortForwarding = 3
)

// PortWatcher reads bridge port states in one network namespace from the
// bridges' own link dump (AF_BRIDGE). A plain RTM_GETLINK of the port
// would not do: it runs the link watcher's pending work for the link
// first, and so changes what it reads.
type PortWatcher struct{ s *nl.NetlinkSocket }

// NewPortWatcher opens a route socket in the namespace at nsPath.
func NewPortWatcher(nsPath string) (*PortWatcher, error) {
	target, err := vnetns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("port watcher: %w", err)
	}
	defer target.Close()
	cur, err := vnetns.Get()
	if err != nil {
		return nil, fmt.Errorf("port watcher: %w", err)
	}
	defer cur.Close()
	s, err := nl.GetNetlinkSocketAt(target, cur, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("port watcher in %s: %w", nsPath, err)
	}
	return &PortWatcher{s: s}, nil
}

// Close closes the socket.
func (w *PortWatcher) Close() { w.s.Close() }

// State is the state of the bridge port named name; -1 when no bridge has
// a port of that name.
func (w *PortWatcher) State(name string) (int, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfInfomsg(unix.AF_BRIDGE))
	if err := w.s.Send(req); err != nil {
		return -1, err
	}
	state := -1
	for {
		msgs, _, err := w.s.Receive()
		if err != nil {
			return -1, err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return state, nil
			case unix.NLMSG_ERROR:
				return -1, fmt.Errorf("bridge port dump: error %d", int32(nl.NativeEndian().Uint32(m.Data)))
			case unix.RTM_NEWLINK:
				if st, ok := portStateIn(m.Data, name); ok {
					state = st
				}
			}
		}
	}
}

// portStateIn reads IFLA_PROTINFO's state from one AF_BRIDGE link message
// when the link is named name.
func portStateIn(b []byte, name string) (int, bool) {
	if len(b) < unix.SizeofIfInfomsg {
		return 0, false
	}
	as, err := nl.ParseRouteAttr(b[unix.SizeofIfInfomsg:])
	if err != nil {
		return 0, false
	}
	mine, state := false, -1
	for _, a := range as {
		switch a.Attr.Type &^ unix.NLA_F_NESTED {
		case unix.IFLA_IFNAME:
			mine = string(a.Value) == name+"\x00"
		case unix.IFLA_PROTINFO:
			in, err := nl.ParseRouteAttr(a.Value)
			if err != nil {
				return 0, false
			}
			for _, p := range in {
				if p.Attr.Type&^unix.NLA_F_NESTED == nl.IFLA_BRPORT_STATE && len(p.Value) == 1 {
					state = int(p.Value[0])
				}
			}
		}
	}
	return state, mine && state >= 0
}
