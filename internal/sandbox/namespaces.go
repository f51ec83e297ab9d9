// Package sandbox is the kernel side of sandboxes that the engine drives:
// their network namespaces (files under the daemon's private directory,
// identities, the processes in them). The engine keeps networks, endpoints
// and their lifecycle; it reaches namespaces only through Namespaces, so
// its logic runs in unit tests against a fake (sandboxtest).
package sandbox

import (
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/nlutil"
)

// Namespaces makes, finds and deletes sandboxes' network namespaces.
type Namespaces interface {
	// PrepareDir makes dir a private mount that holds namespace files.
	PrepareDir(dir string) error
	// Create makes a new network namespace bound at path, with IPv6 off on
	// interfaces created in it and router advertisements refused, and
	// returns its identity.
	Create(path string) (netns.ID, error)
	// Delete unmounts and removes a namespace file; one that is gone is
	// success.
	Delete(path string) error
	// IDOf is the identity of the namespace a file (or /proc link) names.
	IDOf(path string) (netns.ID, error)
	// IsNSFile reports whether path is a network namespace file.
	IsNSFile(path string) bool
	// BindProc binds the network namespace of process pid at path.
	BindProc(pid int, path string) error
	// ProcPath is the /proc link of a process's network namespace.
	ProcPath(pid int) string
	// FindProcessIn returns a process whose network namespace is id, 0 when
	// none is found.
	FindProcessIn(id netns.ID) int
	// RemoveStrayLinks deletes the veths in the namespace at path whose
	// names keep does not accept, and returns the links left, by name (for
	// the drivers' Repair: one listing per sandbox), and the names removed.
	RemoveStrayLinks(path string, keep func(name string) bool) (map[string]driver.SandboxLink, []string, error)
}

// Kernel is Namespaces on the running kernel.
type Kernel struct{}

var _ Namespaces = Kernel{}

func (Kernel) PrepareDir(dir string) error { return netns.PrepareDir(dir) }

// Create makes the namespace with IPv6 off by default and no router
// advertisements taken should a process turn it back on for an interface
// (a neighbour's rogue RA), and keeps a netlink handle opened inside it for
// the first attach (netns.CreateKeep).
func (Kernel) Create(path string) (netns.ID, error) {
	return netns.CreateKeep(path, func() error {
		return netns.WriteSysctls("net/ipv6/conf", "default/disable_ipv6", "1", "default/accept_ra", "0", "all/accept_ra", "0")
	})
}

func (Kernel) Delete(path string) error            { return netns.Delete(path) }
func (Kernel) IDOf(path string) (netns.ID, error)  { return netns.IDOf(path) }
func (Kernel) IsNSFile(path string) bool           { return netns.IsNSFile(path) }
func (Kernel) BindProc(pid int, path string) error { return netns.BindProcNS(pid, "net", path) }
func (Kernel) ProcPath(pid int) string             { return netns.ProcNSPath(pid, "net") }
func (Kernel) FindProcessIn(id netns.ID) int       { return netns.FindProcessIn("net", id) }

func (Kernel) RemoveStrayLinks(path string, keep func(string) bool) (map[string]driver.SandboxLink, []string, error) {
	h, err := netns.NewHandle(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open sandbox namespace: %w", err)
	}
	defer h.Close()
	links, err := nlutil.Dump("list links", h.LinkList)
	if err != nil {
		return nil, nil, fmt.Errorf("list sandbox interfaces: %w", err)
	}
	kept := map[string]driver.SandboxLink{}
	var removed []string
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		_, veth := l.(*netlink.Veth)
		if !veth || keep(name) {
			kept[name] = driver.SandboxLink{Name: name, Index: l.Attrs().Index, PeerIndex: l.Attrs().ParentIndex, Veth: veth}
			continue
		}
		if err := h.LinkDel(l); err != nil && !nlutil.IsLinkGone(err) {
			errs = append(errs, fmt.Errorf("delete %q: %w", name, err))
			continue
		}
		removed = append(removed, name)
	}
	slices.Sort(removed)
	if len(errs) > 0 {
		return kept, removed, errs[0]
	}
	return kept, removed, nil
}
