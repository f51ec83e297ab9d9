package ovs

import (
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/driver"
)

func TestCheckOptions(t *testing.T) {
	cases := []struct {
		name string
		opts map[string]string
		want options
		err  string // substring; "" valid
	}{
		{name: "defaults", want: options{bridge: "tth-abc", gateway: "tth-abc", db: "unix:/def.sock", datapath: "auto"}},
		{name: "all given", opts: map[string]string{OptBridge: "br-int", OptVLAN: "4094", OptDB: "unix:/var/run/ovs/db.sock", OptDatapath: "netdev"},
			want: options{bridge: "br-int", gateway: "tth-abc", vlan: 4094, db: "unix:/var/run/ovs/db.sock", datapath: "netdev"}},
		{name: "other drivers' options ignored", opts: map[string]string{"com.docker.network.bridge.name": "x", "parent": "eth0"},
			want: options{bridge: "tth-abc", gateway: "tth-abc", db: "unix:/def.sock", datapath: "auto"}},
		{name: "VLAN 0", opts: map[string]string{OptVLAN: "0"}, err: "invalid option ovs.vlan=\"0\""},
		{name: "VLAN 4095", opts: map[string]string{OptVLAN: "4095"}, err: "from 1 to 4094"},
		{name: "VLAN not a number", opts: map[string]string{OptVLAN: "ten"}, err: "ovs.vlan"},
		{name: "bridge name too long", opts: map[string]string{OptBridge: "a-very-long-name"}, err: "invalid option ovs.bridge"},
		{name: "bridge name with a slash", opts: map[string]string{OptBridge: "br/0"}, err: "ovs.bridge"},
		{name: "empty bridge name", opts: map[string]string{OptBridge: ""}, err: "ovs.bridge"},
		{name: "db without unix:", opts: map[string]string{OptDB: "/run/openvswitch/db.sock"}, err: "invalid option ovs.db"},
		{name: "db over tcp", opts: map[string]string{OptDB: "tcp:127.0.0.1:6640"}, err: "ovs.db"},
		{name: "db relative path", opts: map[string]string{OptDB: "unix:db.sock"}, err: "absolute"},
		{name: "datapath", opts: map[string]string{OptDatapath: "dpdk"}, err: "invalid option ovs.datapath"},
		{name: "unknown ovs option named", opts: map[string]string{"ovs.tag": "5"}, err: "invalid option ovs.tag: unknown"},
	}
	d := NewAt("unix:/def.sock", nil, "")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := &driver.Network{Name: "n", BridgeName: "tth-abc", Options: c.opts}
			err := d.CheckOptions(n)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := d.options(n)
			if got != c.want {
				t.Errorf("options %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestDefaultDB(t *testing.T) {
	if got := New("").defaultDB; got != DefaultDB {
		t.Errorf("default database %q, want %q", got, DefaultDB)
	}
}

func TestDatapathType(t *testing.T) {
	saved := kernelDatapath
	t.Cleanup(func() { kernelDatapath = saved })
	cases := []struct {
		opt    string
		kernel bool
		want   string
	}{
		{"auto", false, "netdev"},
		{"auto", true, ""},
		{"netdev", true, "netdev"},
		{"system", false, ""},
	}
	for _, c := range cases {
		kernelDatapath = func() bool { return c.kernel }
		if got := (options{datapath: c.opt}).datapathType(); got != c.want {
			t.Errorf("%s with kernel module %v: %q, want %q", c.opt, c.kernel, got, c.want)
		}
	}
}

func TestCapabilitiesAsBridge(t *testing.T) {
	c := New("").Capabilities()
	if !c.Addresses || !c.Ports || !c.Firewall || !c.DNS || !c.DefaultRoute || !c.WayOut || c.Scope != driver.ScopeLocal {
		t.Errorf("capabilities %+v", c)
	}
}
