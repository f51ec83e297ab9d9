package firewall

// Self-healing. Another program can remove Tether's table at any time:
// `nft flush ruleset`, `nft delete table ip tether`, or a firewalld or ufw
// reload, which flushes the whole ruleset and loads its own (Docker's
// CVE-2025-54388 and CVE-2025-54410: after a firewalld reload Docker's
// published ports and isolation were gone until Docker restarted). Watch
// joins the nftables multicast group (NFNLGRP_NFTABLES, what `nft monitor`
// reads) on a socket of its own and sleeps in recvmsg until the kernel
// reports a committed transaction: no polling, no CPU when nothing changes.
//
// Every transaction ends with a NEWGEN message naming the thread that
// committed it. Transactions committed by a thread of this process are
// Tether's own (Sync, Add, the coexistence rules) and never trigger a
// repair. Any other transaction that touches table ip tether (or ip6
// tether, with Options.IPv6), deletes a table, or changes set elements (the kernel does not name the table of an
// element in its notification) marks the table dirty. After a short quiet
// period (debounce: a reload is often several transactions in a row) the
// table is read and, when it differs from what the backend remembers,
// rebuilt in one batch by the same Sync path the daemon starts with. Every
// transaction, ours included, also marks the other tables for the
// coexistence check (coexist.go).
//
// When the socket overflows (ENOBUFS: events were lost) or fails, the
// monitor is reopened and a full repair and check run, since what was lost
// is unknown.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/google/nftables"
)

// Debounce of the watcher: act once no transaction arrived for quiet, or
// maxWait after the first one of a burst, whichever comes first.
const (
	quietPeriod = 20 * time.Millisecond
	maxWait     = 200 * time.Millisecond
	reopenDelay = time.Second
)

// WatchOptions configure Watch.
type WatchOptions struct {
	Log *slog.Logger
	// AcceptOtherTables: insert accept rules for Tether's bridges into the
	// forward chains of other tables that would drop their traffic
	// (daemon option forward-accept-other-tables, coexist.go). Without
	// it those chains are only reported.
	AcceptOtherTables bool
	// Restored, when set, is called after each repair with the time from
	// the first event of the burst to the table being written back (tests
	// and benchmarks).
	Restored func(took time.Duration)
	// Also are Tether's other tables (table ip tether_vxlan, VXLANGuard),
	// repaired after the same events as table ip tether; each call rewrites
	// its table only when it is missing or differs.
	Also []Repairer
}

// Repairer is another Tether table that the watcher keeps in place.
type Repairer interface {
	Repair(ctx context.Context) error
}

// dirt is what a burst of transactions may have changed.
type dirt struct {
	table  bool // Tether's table may differ from what f remembers
	others bool // another table may now block (or stop blocking) Tether's traffic
}

func (d *dirt) add(o dirt) { d.table, d.others = d.table || o.table, d.others || o.others }

// classify says what one committed transaction may have changed. own: the
// transaction was committed by this process; ipv6: table ip6 tether is
// ours too (Options.IPv6).
func classify(g *nftables.MonitorEvents, own, ipv6 bool) dirt {
	if own {
		return dirt{others: true} // a network or port changed: the coexistence rules follow
	}
	d := dirt{others: true}
	for _, ev := range g.Changes {
		if touchesTable(ev, ipv6) {
			d.table = true
		}
	}
	return d
}

// touchesTable reports whether an event may concern table ip tether or ip
// tether_vxlan (or, with ipv6, their ip6 twins).
func touchesTable(ev *nftables.MonitorEvent, ipv6 bool) bool {
	ours := func(t *nftables.Table) bool {
		return t == nil || t.Family == nftables.TableFamilyIPv4 && (t.Name == TableName || t.Name == VXLANTable) ||
			ipv6 && t.Family == nftables.TableFamilyIPv6 && (t.Name == TableName || t.Name == VXLANTable)
	}
	switch d := ev.Data.(type) {
	case *nftables.Table:
		return ours(d)
	case *nftables.Chain:
		return ours(d.Table)
	case *nftables.Rule:
		return ours(d.Table)
	case *nftables.Set:
		return ours(d.Table)
	}
	switch ev.Type {
	case nftables.MonitorEventTypeNewSetElem, nftables.MonitorEventTypeDelSetElem:
		return true // the notification does not name the table
	}
	return false
}

// ownThread reports whether tid is a thread of this process: the kernel
// names the thread that committed a transaction (NFTA_GEN_PROC_PID is the
// committing task's pid, which for a Go program is one of its threads).
func ownThread(tid uint32) bool {
	if tid == 0 {
		return false
	}
	if int(tid) == os.Getpid() {
		return true
	}
	_, err := os.Stat("/proc/self/task/" + strconv.FormatUint(uint64(tid), 10))
	return err == nil
}

// Repair reads table ip tether (and ip6 tether with Options.IPv6) and,
// when one is missing or differs from the networks and ports f remembers (sets, chains, rules or elements), rebuilds
// it in one batch (see syncLocked). It reports whether it wrote anything.
// Only meaningful after the first Sync.
func (f *NFT) Repair() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	have, ok := entries{}, true
	for _, fm := range f.families() {
		st, err := f.read(fm)
		if err != nil {
			return false, fmt.Errorf("read table %s %s: %w", fm.name, TableName, err)
		}
		ok = ok && st.exists && st.layout == ""
		have.merge(st.have)
	}
	if ok && sameIDs(have, f.wantLocked(), f.families()) {
		return false, nil
	}
	if err := f.syncLocked(); err != nil {
		return true, fmt.Errorf("restore %s: %w", f.tableNames(), err)
	}
	return true, nil
}

// wantLocked is every element the tables should hold.
func (f *NFT) wantLocked() entries {
	want := f.entriesOf(f.networks()...)
	for set, ids := range portEntries(f.portList()...) {
		want[set] = ids
	}
	return want
}

// sameIDs reports whether two element listings name the same entries in
// every set of the families' tables.
func sameIDs(a, b entries, fams []*family) bool {
	for _, fm := range fams {
		for _, s := range sets(fm.table()) {
			k := fm.key(s.Name)
			if len(a[k]) != len(b[k]) {
				return false
			}
			for id := range a[k] {
				if _, ok := b[k][id]; !ok {
					return false
				}
			}
		}
	}
	return true
}

// Networks returns the networks f holds in the kernel.
func (f *NFT) Networks() []Network {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.networks()
}

// monitorConn opens a netlink connection in f's namespace for the monitor
// and the coexistence check (not f's lasting socket, which carries f's
// requests). A connection that is not lasting dials a socket per request,
// in the namespace of the descriptor it was given: release closes that
// descriptor, once the last socket is open.
func (f *NFT) monitorConn() (c *nftables.Conn, release func(), err error) {
	if f.opts.NetNS == "" {
		c, err = nftables.New()
		return c, func() {}, err
	}
	ns, err := os.Open(f.opts.NetNS)
	if err != nil {
		return nil, nil, fmt.Errorf("open namespace %q: %w", f.opts.NetNS, err)
	}
	c, err = nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		ns.Close()
		return nil, nil, err
	}
	return c, func() { ns.Close() }, nil
}

// Watch follows nftables transactions in f's namespace until ctx ends,
// repairing Tether's table and checking other tables' forward chains as
// described in the file comment. It returns once the monitor is
// subscribed and the first coexistence check ran; the returned function
// waits for the watcher to finish after ctx ended (removing the accept
// rules it inserted into other tables). Call it after the first Sync.
func (f *NFT) Watch(ctx context.Context, o WatchOptions) (wait func(), err error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	w := &watcher{f: f, o: o, co: newCoexist(o.Log, o.AcceptOtherTables)}
	w.co.ipv6 = f.opts.IPv6
	ch, closeMon, err := w.open()
	if err != nil {
		return nil, err
	}
	w.checkOthers()
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx, ch, closeMon)
	}()
	return func() { <-done }, nil
}

type watcher struct {
	f  *NFT
	o  WatchOptions
	co *coexist
}

// open subscribes a new monitor to every nftables notification (NEWGEN
// included, which ends each transaction).
func (w *watcher) open() (chan *nftables.MonitorEvents, func(), error) {
	c, release, err := w.f.monitorConn()
	if err != nil {
		return nil, nil, fmt.Errorf("nftables monitor: %w", err)
	}
	defer release() // the monitor's socket is open once AddGenerationalMonitor returns
	m := nftables.NewMonitor(nftables.WithMonitorEventBuffer(256))
	ch, err := c.AddGenerationalMonitor(m)
	if err != nil {
		return nil, nil, fmt.Errorf("nftables monitor: join the nftables multicast group: %w", err)
	}
	return ch, func() { m.Close() }, nil
}

// run is the watcher's loop: collect transactions into a burst, act on
// the burst once it is quiet.
func (w *watcher) run(ctx context.Context, ch chan *nftables.MonitorEvents, closeMon func()) {
	defer func() {
		closeMon()
		if c, release := w.conn(); c != nil {
			w.co.removeAll(c)
			release()
		}
	}()
	var pending dirt
	var first time.Time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case g, ok := <-ch:
			if !ok || g.GeneratedBy == nil || g.GeneratedBy.Type == nftables.MonitorEventTypeOOB {
				ch, closeMon = w.reopen(ctx, g, closeMon)
				if ch == nil {
					return
				}
				pending, first = dirt{table: true, others: true}, time.Now()
				timer.Reset(0)
				continue
			}
			if first.IsZero() {
				first = time.Now()
			}
			pending.add(classify(g, isOwn(g), w.f.opts.IPv6))
			timer.Reset(min(quietPeriod, max(0, maxWait-time.Since(first))))
		case <-timer.C:
			w.act(pending, first)
			pending, first = dirt{}, time.Time{}
		}
	}
}

func isOwn(g *nftables.MonitorEvents) bool {
	gen, ok := g.GeneratedBy.Data.(*nftables.GenMsg)
	return ok && ownThread(gen.ProcPID)
}

// reopen replaces a monitor that failed (g holds the error, if any).
func (w *watcher) reopen(ctx context.Context, g *nftables.MonitorEvents, closeMon func()) (chan *nftables.MonitorEvents, func()) {
	closeMon()
	var cause error
	if g != nil && g.GeneratedBy != nil {
		cause = g.GeneratedBy.Error
	}
	w.o.Log.Warn("nftables monitor failed; reopening it and checking the table", "err", cause)
	for {
		select {
		case <-ctx.Done():
			return nil, func() {}
		case <-time.After(reopenDelay):
		}
		ch, c, err := w.open()
		if err == nil {
			return ch, c
		}
		w.o.Log.Warn("reopen nftables monitor", "err", err)
	}
}

// act repairs the table and checks the other tables, as d says.
func (w *watcher) act(d dirt, first time.Time) {
	if d.table {
		changed, err := w.f.Repair()
		observeRepair(changed, err)
		took := time.Since(first)
		switch {
		case err != nil:
			w.o.Log.Error("firewall table changed by another program; restoring it failed", "err", err)
		case changed:
			what := "firewall table " + w.f.tableNames() + " was"
			if w.f.opts.IPv6 {
				what = "firewall tables " + w.f.tableNames() + " were"
			}
			w.o.Log.Warn(what+" changed or removed by another program (nft flush ruleset, a firewall reload); restored it",
				"took", took.Round(time.Microsecond))
			if w.o.Restored != nil {
				w.o.Restored(took)
			}
		}
	}
	if d.table {
		for _, r := range w.o.Also {
			if err := r.Repair(context.Background()); err != nil {
				w.o.Log.Error("restore another of Tether's nftables tables", "err", err)
			}
		}
	}
	if d.others || d.table {
		w.checkOthers()
	}
}

// checkOthers runs the coexistence check with the networks f holds.
func (w *watcher) checkOthers() {
	c, release := w.conn()
	if c == nil {
		return
	}
	defer release()
	w.co.check(c, w.f.Networks())
}

// conn opens a request connection for the coexistence check (nil when it
// cannot be opened, which is logged); release closes it.
func (w *watcher) conn() (*nftables.Conn, func()) {
	c, release, err := w.f.monitorConn()
	if err != nil {
		w.o.Log.Warn("check other nftables tables", "err", err)
		return nil, nil
	}
	return c, release
}
