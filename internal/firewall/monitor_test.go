package firewall

import (
	"net/netip"
	"os"
	"syscall"
	"testing"

	"github.com/google/nftables"
)

func gen(evs ...*nftables.MonitorEvent) *nftables.MonitorEvents {
	return &nftables.MonitorEvents{Changes: evs}
}

func TestClassify(t *testing.T) {
	ours := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
	other := &nftables.Table{Name: "filter", Family: nftables.TableFamilyINet}
	same6 := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv6}
	ev := func(typ nftables.MonitorEventType, data any) *nftables.MonitorEvent {
		return &nftables.MonitorEvent{Type: typ, Data: data}
	}
	tests := []struct {
		name string
		g    *nftables.MonitorEvents
		own  bool
		ipv6 bool // Options.IPv6: table ip6 tether is ours
		want dirt
	}{
		{"own change of our table", gen(ev(nftables.MonitorEventTypeDelTable, ours)), true, false, dirt{others: true}},
		{"flush ruleset", gen(ev(nftables.MonitorEventTypeDelTable, other), ev(nftables.MonitorEventTypeDelTable, ours)), false, false, dirt{table: true, others: true}},
		{"rule deleted from our chain", gen(ev(nftables.MonitorEventTypeDelRule, &nftables.Rule{Table: ours})), false, false, dirt{table: true, others: true}},
		{"chain of another table", gen(ev(nftables.MonitorEventTypeNewChain, &nftables.Chain{Table: other})), false, false, dirt{others: true}},
		{"table of our name in another family", gen(ev(nftables.MonitorEventTypeNewTable, same6)), false, false, dirt{others: true}},
		{"set elements (table unknown)", gen(ev(nftables.MonitorEventTypeDelSetElem, []nftables.SetElement{})), false, false, dirt{table: true, others: true}},
		{"set of our table", gen(ev(nftables.MonitorEventTypeDelSet, &nftables.Set{Table: ours})), false, false, dirt{table: true, others: true}},
		{"set of another table", gen(ev(nftables.MonitorEventTypeNewSet, &nftables.Set{Table: other})), false, false, dirt{others: true}},
		{"ip6 tether deleted, IPv6 on", gen(ev(nftables.MonitorEventTypeDelTable, same6)), false, true, dirt{table: true, others: true}},
		{"rule of ip6 tether deleted, IPv6 on", gen(ev(nftables.MonitorEventTypeDelRule, &nftables.Rule{Table: same6})), false, true, dirt{table: true, others: true}},
		{"own change of ip6 tether", gen(ev(nftables.MonitorEventTypeDelTable, same6)), true, true, dirt{others: true}},
		{"ip6 tether_vxlan deleted, IPv6 on", gen(ev(nftables.MonitorEventTypeDelTable, &nftables.Table{Name: VXLANTable, Family: nftables.TableFamilyIPv6})), false, true, dirt{table: true, others: true}},
		{"ip6 tether_vxlan deleted, IPv6 off", gen(ev(nftables.MonitorEventTypeDelTable, &nftables.Table{Name: VXLANTable, Family: nftables.TableFamilyIPv6})), false, false, dirt{others: true}},
		{"inet tether is not ours, IPv6 on", gen(ev(nftables.MonitorEventTypeDelTable, &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet})), false, true, dirt{others: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.g, tc.own, tc.ipv6); got != tc.want {
				t.Errorf("classify = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestOwnThread(t *testing.T) {
	tests := []struct {
		tid  uint32
		want bool
	}{
		{uint32(os.Getpid()), true},
		{uint32(syscall.Gettid()), true},
		{0, false},
		{1 << 30, false}, // above pid_max: no such task
	}
	for _, tc := range tests {
		if got := ownThread(tc.tid); got != tc.want {
			t.Errorf("ownThread(%d) = %v, want %v", tc.tid, got, tc.want)
		}
	}
}

// Repair writes only when the table differs from what the backend
// remembers: missing, emptied, an element gone or added behind its back.
func TestRepair(t *testing.T) {
	port := PortMapping{Proto: "tcp", HostPort: 8080, SandboxIP: netip.MustParseAddr("10.1.0.2"), SandboxPort: 80}
	tests := []struct {
		name   string
		tamper func(c *fakeConn)
		want   bool
	}{
		{"untouched", func(*fakeConn) {}, false},
		{"table deleted", func(c *fakeConn) { c.DelTable(table()) }, true},
		{"element deleted", func(c *fakeConn) {
			s := sets(table())[0]
			els, _ := c.GetSetElements(s)
			c.SetDeleteElements(s, els[:1])
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeConn()
			f := newNFT(c)
			if err := f.Sync(ctx, []Network{netA, netB, netC}, []PortMapping{port}); err != nil {
				t.Fatal(err)
			}
			want := c.ours().String()
			tc.tamper(c)
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			changed, err := f.Repair()
			if err != nil || changed != tc.want {
				t.Fatalf("Repair = %v, %v; want %v", changed, err, tc.want)
			}
			if got := c.ours().String(); got != want {
				t.Errorf("after Repair the table is\n%s\nwant\n%s", got, want)
			}
			if changed, err := f.Repair(); changed || err != nil {
				t.Errorf("second Repair = %v, %v; want false, nil", changed, err)
			}
		})
	}
}
