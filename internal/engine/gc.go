package engine

// Garbage collection on start. After the records are loaded and the kernel
// objects they name are made sure of (restore.go), everything Tether owns
// that no record names is removed. "Owned" is decided by a marker, never by
// a guess:
//   - host links: the alias "tether:<64 hex digits>" (driver.LinkMarker;
//     bridges and host-side veths carry it from their creation), swept by
//     the drivers that make them (driver.Sweeper); a link without it is
//     never touched;
//   - namespace files: every file under exec-root/ns is Tether's (the
//     directory is its private mount); host.net is the daemon's own;
//   - sandbox file directories: every directory under exec-root/sandboxes;
//   - store keys: the address bitmap of each network holds exactly the
//     network's fixed addresses and the addresses of its endpoint records;
//     bitmaps and sticky addresses of networks that no longer exist go.
// Every action is logged at info level. See docs/lifecycle.md.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/store"
)

// collectGarbage removes what Tether owns and no record names. Called from
// Start, before the API serves, so nothing runs concurrently.
func (e *Engine) collectGarbage(ctx context.Context) error {
	e.gcLinks(ctx)
	e.gcNamespaceFiles()
	e.gcSandboxDirs()
	return e.gcStore(ctx)
}

// gcLinks asks every driver that marks its host links (driver.Sweeper) to
// delete those whose owner is no network and no endpoint on record, or
// that carry another name than the records give them.
func (e *Engine) gcLinks(ctx context.Context) {
	keep := map[string]string{} // owner ID -> link name the records give it
	for _, ns := range e.networks {
		if !ns.rec.External && ns.rec.BridgeName != "" {
			keep[ns.rec.ID] = ns.rec.BridgeName
		}
	}
	for _, sb := range e.sandboxes {
		for _, ep := range sb.rec.Endpoints {
			keep[ep.ID] = ep.HostIfName
		}
	}
	for _, name := range e.driverNames() {
		sw, ok := e.drivers[name].(driver.Sweeper)
		if !ok {
			continue
		}
		n, err := sw.Sweep(ctx, keep)
		if err != nil {
			e.log.Warn("garbage collection: links", "driver", name, "err", err)
		}
		if n > 0 {
			e.log.Info("garbage collection: deleted links no record names", "driver", name, "links", n)
		}
	}
}

// gcNamespaceFiles unmounts and removes namespace files under exec-root/ns
// that no sandbox record names (a crash between creating a namespace and
// recording it; the mount and UTS namespace files of earlier versions).
func (e *Engine) gcNamespaceFiles() {
	keep := map[string]bool{e.hostNSPath(): true}
	for _, sb := range e.sandboxes {
		if !sb.rec.Adopted {
			keep[sb.rec.NetNS] = true
		}
	}
	entries, err := os.ReadDir(e.nsDir)
	if err != nil {
		e.log.Error("garbage collection: read namespace directory", "dir", e.nsDir, "err", err)
		return
	}
	for _, de := range entries {
		p := filepath.Join(e.nsDir, de.Name())
		if keep[p] || de.IsDir() {
			continue
		}
		if err := e.nsx.Delete(p); err != nil {
			e.log.Warn("garbage collection: delete namespace file", "file", p, "err", err)
			continue
		}
		e.log.Info("garbage collection: deleted a namespace file no sandbox names", "file", p)
	}
}

// gcSandboxDirs removes exec-root/sandboxes/<id> of sandboxes without a record.
func (e *Engine) gcSandboxDirs() {
	entries, err := os.ReadDir(e.sbDir)
	if err != nil {
		e.log.Error("garbage collection: read sandbox directory", "dir", e.sbDir, "err", err)
		return
	}
	for _, de := range entries {
		if e.sandboxes[de.Name()] != nil {
			continue
		}
		p := filepath.Join(e.sbDir, de.Name())
		if err := os.RemoveAll(p); err != nil {
			e.log.Warn("garbage collection: remove sandbox files", "dir", p, "err", err)
			continue
		}
		e.log.Info("garbage collection: removed files of a sandbox without a record", "dir", p)
	}
}

// gcStore makes each network's address bitmap hold exactly what its endpoint
// records own, and deletes bitmaps and sticky addresses of networks that no
// longer exist, all in one transaction.
func (e *Engine) gcStore(ctx context.Context) error {
	owned, owned6 := map[string][]netip.Addr{}, map[string][]netip.Addr{}
	for _, sb := range e.sandboxes {
		for _, ep := range sb.rec.Endpoints {
			if ep.Address.IsValid() {
				owned[ep.NetworkID] = append(owned[ep.NetworkID], ep.Address.Addr())
			}
			if ep.Address6.IsValid() {
				owned6[ep.NetworkID] = append(owned6[ep.NetworkID], ep.Address6.Addr())
			}
		}
	}
	var ops []store.Op
	for _, ns := range e.networks {
		for _, x := range []struct {
			sub   *ipam.Subnet
			owned []netip.Addr
			key   string
		}{{ns.subnet, owned[ns.rec.ID], keyIPAM}, {ns.subnet6, owned6[ns.rec.ID], keyIPAM6}} {
			if x.sub == nil {
				continue
			}
			fix := reconcileSubnet(x.sub, x.owned)
			for _, a := range fix.dup {
				e.log.Error("address held by more than one endpoint", "network", ns.rec.Name, "address", a)
			}
			if len(fix.reserved)+len(fix.freed) == 0 {
				continue
			}
			e.log.Info("garbage collection: address bitmap fixed from the endpoint records", "network", ns.rec.Name,
				"freed", fix.freed, "reserved", fix.reserved)
			b, err := x.sub.MarshalBinary()
			if err != nil {
				return err
			}
			ops = append(ops, store.Put(x.key+ns.rec.ID, b))
		}
	}
	for _, prefix := range []string{keyIPAM, keySticky, keyIPAM6, keySticky6} {
		kvs, err := e.storeOf(prefix).List(ctx, prefix)
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		for _, kv := range kvs {
			netID, _, _ := strings.Cut(strings.TrimPrefix(kv.Key, prefix), "/")
			if e.networks[netID] == nil {
				ops = append(ops, store.Delete(kv.Key))
				e.log.Info("garbage collection: deleted a key of a network that no longer exists", "key", kv.Key)
			}
		}
	}
	if len(ops) == 0 {
		return nil
	}
	return e.commit(ctx, ops...)
}

// subnetFix is what reconcileSubnet changed.
type subnetFix struct {
	reserved []netip.Addr // owned by an endpoint but free in the bitmap
	freed    []netip.Addr // taken in the bitmap but owned by no endpoint
	dup      []netip.Addr // owned by more than one endpoint (or fixed)
}

// reconcileSubnet makes sub's occupancy exactly its fixed addresses plus
// owned. The next-fit cursor is kept. A subnet without an ip-range is only
// scanned when its free count shows a leak; one with an ip-range (addresses
// outside it are not counted) always is.
func reconcileSubnet(sub *ipam.Subnet, owned []netip.Addr) subnetFix {
	var fix subnetFix
	cfg := sub.Config()
	want, err := ipam.NewSubnet(cfg)
	if err != nil {
		return fix // the recorded configuration was valid when it was made
	}
	for _, a := range owned {
		if err := want.Reserve(a); errors.Is(err, ipam.ErrAddrInUse) {
			fix.dup = append(fix.dup, a)
		}
		if !sub.InUse(a) && sub.Reserve(a) == nil {
			fix.reserved = append(fix.reserved, a)
		}
	}
	wholeRange := !cfg.IPRange.IsValid() || cfg.IPRange == cfg.Subnet
	if wholeRange && sub.Free() == want.Free() {
		return fix // sub holds all of want and as many: the same set
	}
	if cfg.Subnet.Addr().Is6() {
		// Too many addresses to scan: free what sub holds and want does
		// not among its allocation window and its addresses outside it.
		for _, a := range sub.Taken() {
			if !want.InUse(a) {
				sub.Release(a)
				fix.freed = append(fix.freed, a)
			}
		}
		return fix
	}
	for a := cfg.Subnet.Masked().Addr(); cfg.Subnet.Contains(a); a = a.Next() {
		if sub.InUse(a) && !want.InUse(a) {
			sub.Release(a)
			fix.freed = append(fix.freed, a)
		}
	}
	return fix
}

// isID tells whether s looks like a Tether object ID (newID: 64 hex digits).
func isID(s string) bool { return driver.IsID(s) }
