package cni

import (
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

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
// the default namespace gets no CNI table or bridge. With TETHER_E2E=1 the
// plugins must be installed (bench/refs/cni.sh).
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
	}},
	{"attach-port", []row{
		{"tether", attach.RunTether, attach.Options{Publish: true}},
		{"cni", RunCNI, attach.Options{Publish: true}},
	}},
	{"parallel", []row{
		{"tether", attach.RunTether, attach.Options{Clients: clients}},
		{"cni", RunCNI, attach.Options{Clients: clients}},
		{"floor", attach.RunFloor, attach.Options{Clients: clients}},
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
