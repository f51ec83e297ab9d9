package cni

import (
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/testutil"
)

// TestMain removes the daemon binary testutil builds.
func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinary()
	os.Exit(code)
}

// TestConfList checks the conflist libcni is given, without root: bridge
// with host-local on the subnet and its state in the run's directory, and
// portmap with the nftables backend only when ports are published.
func TestConfList(t *testing.T) {
	for _, publish := range []bool{false, true} {
		c := Config{Dir: "/tmp/x", Name: "tbench-1", Bridge: "cbr1", Subnet: Subnet, Publish: publish}
		list, err := libcni.NetworkConfFromBytes(ConfList(c))
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, p := range list.Plugins {
			types = append(types, p.Network.Type)
		}
		want := []string{"bridge"}
		if publish {
			want = append(want, "portmap")
		}
		if list.Name != c.Name || !slices.Equal(types, want) {
			t.Fatalf("publish %v: network %q plugins %v, want %q %v", publish, list.Name, types, c.Name, want)
		}
		var br struct {
			Bridge        string `json:"bridge"`
			IsGateway     bool   `json:"isGateway"`
			IPMasq        bool   `json:"ipMasq"`
			IPMasqBackend string `json:"ipMasqBackend"`
			IPAM          struct {
				Type    string                `json:"type"`
				DataDir string                `json:"dataDir"`
				Ranges  [][]map[string]string `json:"ranges"`
			} `json:"ipam"`
		}
		if err := json.Unmarshal(list.Plugins[0].Bytes, &br); err != nil {
			t.Fatal(err)
		}
		if br.Bridge != "cbr1" || !br.IsGateway || !br.IPMasq || br.IPMasqBackend != "nftables" ||
			br.IPAM.Type != "host-local" || br.IPAM.DataDir != "/tmp/x/ipam" ||
			br.IPAM.Ranges[0][0]["subnet"] != "10.125.0.0/16" || br.IPAM.Ranges[0][0]["gateway"] != "10.125.0.1" {
			t.Errorf("bridge conf %+v", br)
		}
		if publish {
			var pm struct {
				Backend      string          `json:"backend"`
				Capabilities map[string]bool `json:"capabilities"`
			}
			if err := json.Unmarshal(list.Plugins[1].Bytes, &pm); err != nil {
				t.Fatal(err)
			}
			if pm.Backend != "nftables" || !pm.Capabilities["portMappings"] {
				t.Errorf("portmap conf %+v", pm)
			}
		}
	}
}

// TestTetherConfList checks the tether plugin's conflist, without root:
// one plugin, type tether, on the network and socket given, with the
// portMappings capability, parsed by libcni as a runtime would.
func TestTetherConfList(t *testing.T) {
	list, err := libcni.NetworkConfFromBytes(TetherConfList("tbench-1", "bench", "/tmp/d/tether.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if list.Name != "tbench-1" || list.CNIVersion != "1.1.0" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "tether" {
		t.Fatalf("conflist %q %s with %d plugins, want tbench-1 1.1.0 with one of type tether", list.Name, list.CNIVersion, len(list.Plugins))
	}
	var conf struct {
		Network      string          `json:"network"`
		Socket       string          `json:"socket"`
		Capabilities map[string]bool `json:"capabilities"`
	}
	if err := json.Unmarshal(list.Plugins[0].Bytes, &conf); err != nil {
		t.Fatal(err)
	}
	if conf.Network != "bench" || conf.Socket != "unix:///tmp/d/tether.sock" || !conf.Capabilities["portMappings"] {
		t.Errorf("tether conf %+v", conf)
	}
}

// TestSum: libcni's own share is the call's time less every plugin exec.
func TestSum(t *testing.T) {
	for _, tc := range []struct {
		execs map[string]time.Duration
		want  time.Duration
	}{
		{nil, 0},
		{map[string]time.Duration{"tether ADD": 3 * time.Millisecond}, 3 * time.Millisecond},
		{map[string]time.Duration{"bridge ADD": 50 * time.Millisecond, "portmap ADD": 30 * time.Millisecond}, 80 * time.Millisecond},
	} {
		if got := sum(tc.execs); got != tc.want {
			t.Errorf("sum(%v) = %v, want %v", tc.execs, got, tc.want)
		}
	}
}

// TestContainerID: 64 hex digits, distinct per sandbox and per network from
// the first 12 on (a runtime's IDs are; Tether names a sandbox after them).
func TestContainerID(t *testing.T) {
	seen := map[string]bool{}
	for _, name := range []string{"tbench-1", "tbench-2"} {
		for i := range 100 {
			id := ContainerID(name, i)
			if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" || seen[id[:12]] {
				t.Fatalf("ContainerID(%q, %d) = %q: want 64 hex digits, the first 12 unseen", name, i, id)
			}
			seen[id[:12]] = true
		}
	}
}

// TestEnvValue: the last assignment of a key wins, prefixes do not match.
func TestEnvValue(t *testing.T) {
	env := []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=a", "CNI_CONTAINERIDX=b", "CNI_CONTAINERID=c"}
	if got := envValue(env, "CNI_CONTAINERID"); got != "c" {
		t.Errorf("got %q, want c", got)
	}
	if got := envValue(env, "CNI_NETNS"); got != "" {
		t.Errorf("got %q, want empty", got)
	}
}

// smokeN is the size of each smoke row.
const smokeN = 5

// clients is the number of goroutines attaching at once in the parallel
// scenario.
const clients = 8

// TestCNISmoke runs each scenario with 5 sandboxes per system and checks
// correctness only: addresses, traffic between sandboxes (and to the CNI
// gateway), published ports reached from an outside namespace through
// Tether's publish and through portmap's DNAT, and after removal no link,
// namespace file, rule, IPAM lease, cache entry or plugin process left;
// the default namespace gets no CNI table or bridge. The tether-cni rows
// (the tether plugin through libcni) also check that the daemon lists
// exactly the attachments the results describe, and none after DEL. With
// TETHER_E2E=1 the plugins must be installed (bench/refs/cni.sh).
func TestCNISmoke(t *testing.T) {
	testutil.RequireRoot(t)
	Require(t)
	before := defaultNSState(t)
	t.Cleanup(func() {
		if after := defaultNSState(t); !slices.Equal(after, before) {
			t.Errorf("default namespace changed: CNI tables and bridges %v, before %v", after, before)
		}
	})
	for _, sc := range smokeScenarios {
		t.Run(sc.name, func(t *testing.T) {
			for _, row := range sc.rows {
				t.Run(row.system, func(t *testing.T) {
					o := row.opts
					o.N, o.Verify = smokeN, true
					r := row.run(t, o)
					if r.Attach.N != smokeN || r.Remove.N != smokeN || r.Publish != o.Publish || r.Clients != o.Clients ||
						r.LinksGone.N != smokeN || r.Complete.N != smokeN {
						t.Errorf("result %+v", r)
					}
					t.Logf("%s: remove answer p50 %.2f ms, links gone p50 %.2f ms, both p50 %.2f ms",
						r.System, r.Remove.P50, r.LinksGone.P50, r.Complete.P50)
				})
			}
		})
	}
}

// A row: one system in one scenario.
type row struct {
	system string
	run    func(testing.TB, attach.Options) attach.Run
	opts   attach.Options
}

type scenario struct {
	name string
	rows []row
}

var smokeScenarios = []scenario{
	{"attach", []row{
		{"tether", attach.RunTether, attach.Options{}},
		{"cni", RunCNI, attach.Options{}},
		{"floor", attach.RunFloor, attach.Options{}},
		{"tether-cni", RunTetherCNI, attach.Options{}},
	}},
	{"attach-port", []row{
		{"tether", attach.RunTether, attach.Options{Publish: true}},
		{"cni", RunCNI, attach.Options{Publish: true}},
		{"tether-cni", RunTetherCNI, attach.Options{Publish: true}},
	}},
	{"parallel", []row{
		{"tether", attach.RunTether, attach.Options{Clients: clients}},
		{"cni", RunCNI, attach.Options{Clients: clients}},
		{"floor", attach.RunFloor, attach.Options{Clients: clients}},
		{"tether-cni", RunTetherCNI, attach.Options{Clients: clients}},
	}},
}

// defaultNSState lists what a leak of the CNI rows into the default
// namespace would show: nftables tables named cni_* and links named cbr*.
func defaultNSState(t *testing.T) []string {
	t.Helper()
	var out []string
	tables, err := exec.Command("nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v\n%s", err, tables)
	}
	for _, l := range strings.Split(string(tables), "\n") {
		if strings.Contains(l, " cni_") {
			out = append(out, l)
		}
	}
	links := testutil.Must(t, "ip", "-o", "link", "show")
	for _, l := range strings.Split(links, "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], "cbr") {
			out = append(out, f[1])
		}
	}
	return out
}
