package attach

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// BenchmarkFloorMessages attaches with Floor (one netlink call per change,
// nine requests) and CombinedFloor (six) in turn, each to its own bridge in
// its own host namespace, and reports each one's p50 and their ratio: what
// the message shapes alone are worth, like for like.
//
//	sudo go test ./bench/attach -run '^$' -bench FloorMessages -benchtime 400x
func BenchmarkFloorMessages(b *testing.B) {
	testutil.RequireRoot(b)
	parent := NSParent(b)
	f, err := NewFloor("/run/netns/"+testutil.NetNS(b, "tth-fm"), filepath.Join(parent, "a"))
	if err != nil {
		b.Fatal(err)
	}
	c, err := NewCombinedFloor("/run/netns/"+testutil.NetNS(b, "tth-fc"), filepath.Join(parent, "b"))
	if err != nil {
		f.Close()
		b.Fatal(err)
	}
	var fs, cs []*FloorSandbox
	defer func() {
		for _, sb := range fs {
			_ = f.Remove(sb)
		}
		for _, sb := range cs {
			_ = c.Remove(sb)
		}
		f.Close()
		c.Close()
	}()
	var ft, ct []time.Duration
	i := 0
	for b.Loop() {
		for k := range 2 { // in turn first
			t0 := time.Now()
			if (i+k)%2 == 0 {
				sb, _, err := f.Attach(i)
				ft = append(ft, time.Since(t0))
				fs = append(fs, sb)
				if err != nil {
					b.Fatal(err)
				}
			} else {
				sb, _, err := c.Attach(i)
				ct = append(ct, time.Since(t0))
				cs = append(cs, sb)
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		i++
	}
	slices.Sort(ft)
	slices.Sort(ct)
	fp, cp := ft[len(ft)/2], ct[len(ct)/2]
	b.ReportMetric(float64(fp.Microseconds()), "floor-p50-µs")
	b.ReportMetric(float64(cp.Microseconds()), "combined-p50-µs")
	b.ReportMetric(float64(cp)/float64(fp), "combined/floor")
}

// TestCombinedFloorSmoke attaches three sandboxes with CombinedFloor and
// checks each one: its address, its host end enslaved and up, and a ping
// to the bridge's address.
func TestCombinedFloorSmoke(t *testing.T) {
	testutil.RequireRoot(t)
	c, err := NewCombinedFloor("/run/netns/"+testutil.NetNS(t, "tth-fc"), filepath.Join(NSParent(t), "c"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 3 {
		sb, _, err := c.Attach(i)
		if err != nil {
			t.Fatal(err)
		}
		if addrs, err := sb.Addrs(); err != nil || len(addrs) != 1 || addrs[0] != sb.Addr {
			t.Errorf("sandbox %d: addresses %v, %v; want %v", i, addrs, err, sb.Addr)
		}
		peer, err := c.h.LinkByName(fmt.Sprintf("fv%d", i))
		if err != nil || peer.Attrs().MasterIndex != c.bridge.Attrs().Index || peer.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("host end of sandbox %d: %+v, %v", i, peer, err)
		}
		if err := Ping(sb.Path, c.gw); err != nil {
			t.Errorf("sandbox %d: %v", i, err)
		}
		if err := c.Remove(sb); err != nil {
			t.Error(err)
		}
	}
}
