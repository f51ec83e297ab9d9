// Package firewall measures the self-healing of Tether's nftables table
// (issue 13, attack 4): the time from another program removing table ip
// tether (`nft flush ruleset`, `nft delete table ip tether`, run as a
// separate nft process) to the table being back, against a reference taken
// in the same run: one full Sync that builds the same table from nothing
// (what the repair does after reading the table). A third process-free
// figure: the CPU the watcher costs while nothing changes, against the same
// process idle without it.
//
// The times are taken by an nftables monitor of the benchmark's own in the
// namespace: the arrival of the transaction that deleted the table and of
// the one that created it again, so neither nft's start-up nor a poll step
// is counted. The repair's debounce (quiet period) is part of the figure.
//
// sudo bench/run.sh firewall writes bench/results/firewall-<date>.json.
package firewall

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/bench/attach"
	fw "github.com/tether-net/tether/internal/firewall"
	"github.com/tether-net/tether/internal/testutil"
)

// Report is the JSON the benchmark writes.
type Report struct {
	Date     time.Time      `json:"date"`
	Machine  map[string]any `json:"machine"`
	Networks int            `json:"networks"`
	Ports    int            `json:"ports"`
	Reps     int            `json:"reps"`
	// Restore: from the deleting transaction to the re-creating one, per
	// attack; FullSync: one Sync building the same table from nothing.
	RestoreFlush  attach.Stats `json:"restore_flush_ruleset"`
	RestoreDelete attach.Stats `json:"restore_delete_table"`
	FullSync      attach.Stats `json:"full_sync"`
	RatioFlush    float64      `json:"restore_flush_over_full_sync_p50"`
	RatioDelete   float64      `json:"restore_delete_over_full_sync_p50"`
	QuietMS       float64      `json:"debounce_quiet_ms"`
	FlushMS       []float64    `json:"restore_flush_ms"`
	DeleteMS      []float64    `json:"restore_delete_ms"`
	SyncMS        []float64    `json:"full_sync_ms"`
	// IdleCPU: CPU time (user+system) of the whole process over IdleSecs
	// with the watcher running, and without it.
	IdleSecs         float64 `json:"idle_secs"`
	IdleCPUWatchMS   float64 `json:"idle_cpu_with_watcher_ms"`
	IdleCPUNoWatchMS float64 `json:"idle_cpu_without_watcher_ms"`
	LoadAfter        string  `json:"loadavg_after"`
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// world is N networks and M published ports, as the firewall sees them.
func world(n, m int) ([]fw.Network, []fw.PortMapping) {
	var nets []fw.Network
	for i := range n {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 177, byte(i), 0}), 24)
		nets = append(nets, fw.Network{ID: fmt.Sprint("n", i), Bridge: fmt.Sprintf("tth-b%d", i), Subnet: p, Masquerade: true, Internal: i%10 == 9})
	}
	var ports []fw.PortMapping
	for i := range m {
		ports = append(ports, fw.PortMapping{Proto: "tcp", HostPort: uint16(20000 + i),
			SandboxIP: netip.AddrFrom4([4]byte{10, 177, byte(i % n), 2}), SandboxPort: 80})
	}
	return nets, ports
}

// tableEvents reports, from an nftables monitor in namespace ns, when a
// transaction deleted table ip tether and when one created it.
type tableEvents struct{ deleted, created chan time.Time }

func watchTable(t *testing.T, ns string) tableEvents {
	t.Helper()
	f, err := os.Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	mon := nftables.NewMonitor(nftables.WithMonitorEventBuffer(1024))
	ch, err := c.AddGenerationalMonitor(mon)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Close() })
	ev := tableEvents{deleted: make(chan time.Time, 64), created: make(chan time.Time, 64)}
	go func() {
		for g := range ch {
			now := time.Now()
			for _, e := range g.Changes {
				tb, ok := e.Data.(*nftables.Table)
				if !ok || tb.Name != fw.TableName || tb.Family != nftables.TableFamilyIPv4 {
					continue
				}
				switch e.Type {
				case nftables.MonitorEventTypeDelTable:
					ev.deleted <- now
				case nftables.MonitorEventTypeNewTable:
					ev.created <- now
				}
			}
		}
	}()
	return ev
}

// attack runs nft with args in namespace name and returns the time from
// the deleting transaction to the re-creating one.
func attack(t *testing.T, name string, ev tableEvents, args ...string) time.Duration {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"netns", "exec", name, "nft"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("nft %v: %v %s", args, err, out)
	}
	var del time.Time
	select {
	case del = <-ev.deleted:
	case <-time.After(10 * time.Second):
		t.Fatal("no deletion event")
	}
	select {
	case cr := <-ev.created:
		return cr.Sub(del)
	case <-time.After(10 * time.Second):
		t.Fatalf("table not restored within 10 s after nft %v", args)
	}
	return 0
}

// fullSync is the reference: a fresh backend builds the whole table in
// namespace ns where none exists.
func fullSync(t *testing.T, ns string, nets []fw.Network, ports []fw.PortMapping) time.Duration {
	t.Helper()
	f, err := fw.NewNFTWith(fw.Options{NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	if err := f.Sync(context.Background(), nets, ports); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	testutil.Must(t, "ip", "netns", "exec", filepath.Base(ns), "nft", "delete", "table", "ip", fw.TableName)
	return took
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func idleCPU(d time.Duration) time.Duration {
	start := cpuTime()
	time.Sleep(d)
	return cpuTime() - start
}

// TestRestoreReport: BENCH_N networks (default 50), 4×BENCH_N ports,
// BENCH_REPS attacks of each kind (default 20; the smoke run 3).
func TestRestoreReport(t *testing.T) {
	testutil.RequireRoot(t)
	n, reps := envInt("BENCH_N", 50), envInt("BENCH_REPS", 20)
	if os.Getenv("BENCH_REPORT") == "" {
		n, reps = 10, 3
	}
	nets, ports := world(n, 4*n)
	name, refName := testutil.NetNS(t, "tth-bfw"), testutil.NetNS(t, "tth-bfr")
	ns, refNS := "/run/netns/"+name, "/run/netns/"+refName

	rep := Report{Date: time.Now().UTC(), Machine: attach.Machine(), Networks: n, Ports: len(ports), Reps: reps, IdleSecs: 2}
	rep.IdleCPUNoWatchMS = float64(idleCPU(2*time.Second).Microseconds()) / 1000

	f, err := fw.NewNFTWith(fw.Options{NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(context.Background(), nets, ports); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wait, err := f.Watch(ctx, fw.WatchOptions{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); wait() }()
	ev := watchTable(t, ns)
	rep.IdleCPUWatchMS = float64(idleCPU(2*time.Second).Microseconds()) / 1000

	var flush, del, sync []time.Duration
	for range reps { // interleaved, so load changes hit all three alike
		flush = append(flush, attack(t, name, ev, "flush", "ruleset"))
		del = append(del, attack(t, name, ev, "delete", "table", "ip", fw.TableName))
		sync = append(sync, fullSync(t, refNS, nets, ports))
	}
	rep.RestoreFlush, rep.RestoreDelete, rep.FullSync = attach.Summarize(flush), attach.Summarize(del), attach.Summarize(sync)
	rep.RatioFlush = rep.RestoreFlush.P50 / rep.FullSync.P50
	rep.RatioDelete = rep.RestoreDelete.P50 / rep.FullSync.P50
	rep.FlushMS, rep.DeleteMS, rep.SyncMS = msList(flush), msList(del), msList(sync)
	rep.QuietMS = 20
	rep.LoadAfter = fmt.Sprint(attach.Machine()["loadavg"])
	t.Logf("restore after flush ruleset p50 %.2f ms, after delete table p50 %.2f ms; full Sync p50 %.2f ms (ratios %.1f, %.1f); idle CPU over 2 s: %.2f ms with the watcher, %.2f ms without",
		rep.RestoreFlush.P50, rep.RestoreDelete.P50, rep.FullSync.P50, rep.RatioFlush, rep.RatioDelete, rep.IdleCPUWatchMS, rep.IdleCPUNoWatchMS)
	writeReport(t, rep)
}

func msList(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d.Microseconds()) / 1000
	}
	return out
}

func writeReport(t *testing.T, rep Report) {
	out := os.Getenv("BENCH_OUT")
	if out == "" {
		return
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
