package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/network"

	"github.com/tether-net/tether/internal/testutil"
)

// dockerCLI runs the stock docker CLI against one daemon, with a private
// client configuration directory so the host's ~/.docker is never read or
// written.
type dockerCLI struct {
	t   *testing.T
	bin string
	env []string
}

// newDockerCLI finds the docker CLI. Under TETHER_E2E=1 its absence is a
// failure: the compatibility suite is part of what CI proves.
func newDockerCLI(t *testing.T, d *testutil.Daemon) *dockerCLI {
	t.Helper()
	bin, err := exec.LookPath("docker")
	if err != nil {
		if testutil.E2E() {
			t.Fatal("TETHER_E2E=1 needs the docker CLI on PATH for the compatibility suite")
		}
		t.Skip("docker CLI not installed")
	}
	return &dockerCLI{t: t, bin: bin, env: append(os.Environ(), "DOCKER_HOST=unix://"+d.Socket,
		"DOCKER_CONFIG="+t.TempDir(), "DOCKER_CONTEXT=", "DOCKER_TLS_VERIFY=", "DOCKER_CERT_PATH=")}
}

func (c *dockerCLI) run(args ...string) (string, error) {
	cmd := exec.Command(c.bin, args...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *dockerCLI) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// lines returns the non-empty lines of out, sorted.
func lines(out string) []string {
	var ls []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	sort.Strings(ls)
	return ls
}

// docker version and docker info print Tether's identity and exit 0; API
// version negotiation follows Docker's, down to 1.24 and not below.
func TestDockerCLIVersionInfo(t *testing.T) {
	_, d := host(t)
	c := newDockerCLI(t, d)
	out := c.must("version")
	for _, want := range []string{"Server: Tether", "API version:", "1.51"} {
		if !strings.Contains(out, want) {
			t.Errorf("docker version lacks %q:\n%s", want, out)
		}
	}
	d.MustTether("sandbox", "create", "--name", "one")
	out = c.must("info")
	for _, want := range []string{"Operating System: Tether", "Containers: 1", "Live Restore Enabled: true", "Network: bridge host macvlan null ovs"} {
		if !strings.Contains(out, want) {
			t.Errorf("docker info lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ERROR") || strings.Contains(out, "rror response") {
		t.Errorf("docker info printed an error:\n%s", out)
	}
	if got := strings.TrimSpace(c.must("version", "--format", "{{.Server.APIVersion}}")); got != "1.51" {
		t.Errorf("negotiated server API version %q", got)
	}
	old := &dockerCLI{t: t, bin: c.bin, env: append(slices.Clone(c.env), "DOCKER_API_VERSION=1.24")}
	if out := old.must("network", "ls", "--format", "{{.Name}}"); !slices.Equal(lines(out), []string{"bridge", "host", "none"}) {
		t.Errorf("network ls at API 1.24: %q", out)
	}
	tooOld := &dockerCLI{t: t, bin: c.bin, env: append(slices.Clone(c.env), "DOCKER_API_VERSION=1.23")}
	if out, err := tooOld.run("network", "ls"); err == nil || !strings.Contains(out, "too old") {
		t.Errorf("API 1.23 accepted: %v %s", err, out)
	}
}

// keysOf returns the keys of a JSON object.
func keysOf(t *testing.T, raw json.RawMessage) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("not an object: %s", raw)
	}
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// sameShape checks that a JSON object has exactly the keys Docker's own type
// (from github.com/moby/moby/api, generated from Docker's API definition)
// marshals, plus optional keys Docker omits when empty.
func sameShape(t *testing.T, what string, got json.RawMessage, docker any, optional ...string) {
	t.Helper()
	ref, _ := json.Marshal(docker)
	want := keysOf(t, ref)
	for _, k := range keysOf(t, got) {
		if !slices.Contains(want, k) && !slices.Contains(optional, k) {
			t.Errorf("%s: key %q is not in Docker's shape %v", what, k, want)
		}
	}
	have := keysOf(t, got)
	for _, k := range want {
		if !slices.Contains(have, k) {
			t.Errorf("%s: lacks Docker's key %q (has %v)", what, k, have)
		}
	}
}

// Every `docker network` command and flag, through the stock CLI, with
// traffic between sandboxes connected by it.
func TestDockerCLINetworkCommands(t *testing.T) {
	_, d := host(t)
	c := newDockerCLI(t, d)
	start := time.Now().Add(-time.Second)

	// create with every flag
	id := strings.TrimSpace(c.must("network", "create", "--driver", "bridge", "--subnet", "10.61.0.0/24",
		"--ip-range", "10.61.0.128/25", "--gateway", "10.61.0.1", "--aux-address", "router=10.61.0.130",
		"--label", "team=net", "--label", "tier=front", "-o", "com.docker.network.driver.mtu=1400",
		"--ipam-opt", "colour=blue", "front"))
	if len(id) != 64 {
		t.Fatalf("create printed %q, want a 64-hex ID", id)
	}
	c.must("network", "create", "--internal", "--subnet", "10.62.0.0/24", "--label", "team=db", "back")
	c.must("network", "create", "--subnet", "10.63.0.0/24", "spare")
	if out, err := c.run("network", "create", "--subnet", "10.64.0.0/33", "bad"); err == nil || !strings.Contains(out, "10.64.0.0/33") {
		t.Errorf("bad subnet: %v %s", err, out)
	}

	// inspect: Docker's shape, fields and templates
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(c.must("network", "inspect", "front")), &raw); err != nil || len(raw) != 1 {
		t.Fatalf("inspect: %v", err)
	}
	sameShape(t, "network inspect", raw[0], network.Inspect{}, "Peers", "Services", "Status")
	var n network.Inspect
	if err := json.Unmarshal(raw[0], &n); err != nil {
		t.Fatal(err)
	}
	if n.ID != id || n.Driver != "bridge" || n.Scope != "local" || n.Internal || n.Labels["tier"] != "front" ||
		n.Options["com.docker.network.driver.mtu"] != "1400" || n.IPAM.Options["colour"] != "blue" || len(n.IPAM.Config) != 1 {
		t.Errorf("inspect front = %+v", n)
	}
	if cfg := n.IPAM.Config[0]; cfg.Subnet.String() != "10.61.0.0/24" || cfg.IPRange.String() != "10.61.0.128/25" ||
		cfg.Gateway.String() != "10.61.0.1" || cfg.AuxAddress["router"].String() != "10.61.0.130" {
		t.Errorf("IPAM config = %+v", cfg)
	}
	if got := strings.TrimSpace(c.must("network", "inspect", "-f", "{{.Internal}} {{index .Labels \"team\"}}", "back")); got != "true db" {
		t.Errorf("inspect -f back = %q", got)
	}
	if out, err := c.run("network", "inspect", "nosuch"); err == nil || !strings.Contains(out, "nosuch") {
		t.Errorf("inspect missing: %v %s", err, out)
	}

	// ls: every filter and --format
	ls := func(args ...string) []string {
		return lines(c.must(append([]string{"network", "ls", "--format", "{{.Name}}"}, args...)...))
	}
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"back", "bridge", "front", "host", "none", "spare"}},
		{[]string{"--filter", "driver=bridge"}, []string{"back", "bridge", "front", "spare"}},
		{[]string{"--filter", "driver=null"}, []string{"none"}},
		{[]string{"--filter", "name=fro"}, []string{"front"}},
		{[]string{"--filter", "id=" + id[:10]}, []string{"front"}},
		{[]string{"--filter", "label=team"}, []string{"back", "front"}},
		{[]string{"--filter", "label=team=db"}, []string{"back"}},
		{[]string{"--filter", "scope=local"}, []string{"back", "bridge", "front", "host", "none", "spare"}},
		{[]string{"--filter", "scope=swarm"}, nil},
		{[]string{"--filter", "type=builtin"}, []string{"bridge", "host", "none"}},
		{[]string{"--filter", "type=custom"}, []string{"back", "front", "spare"}},
		{[]string{"--filter", "dangling=true"}, []string{"back", "front", "spare"}},
		{[]string{"--filter", "driver=bridge", "--filter", "label=team"}, []string{"back", "front"}},
	} {
		if got := ls(tt.args...); !slices.Equal(got, tt.want) {
			t.Errorf("network ls %v = %v, want %v", tt.args, got, tt.want)
		}
	}
	if got := strings.TrimSpace(c.must("network", "ls", "--no-trunc", "-q", "--filter", "name=front")); got != id {
		t.Errorf("ls -q --no-trunc = %q, want %s", got, id)
	}
	table := c.must("network", "ls", "--filter", "name=front")
	if !strings.Contains(table, "NETWORK ID") || !strings.Contains(table, id[:12]+"   front") {
		t.Errorf("ls table:\n%s", table)
	}
	if got := strings.TrimSpace(c.must("network", "ls", "--filter", "name=front", "--format", "{{.ID}} {{.Driver}} {{.Scope}} {{.Internal}} {{.Labels}}")); !strings.HasPrefix(got, id[:12]+" bridge local false ") ||
		!strings.Contains(got, "team=net") {
		t.Errorf("ls --format = %q", got)
	}
	if got := strings.TrimSpace(c.must("network", "ls", "--filter", "name=back", "--format", "json")); !strings.Contains(got, `"Name":"back"`) {
		t.Errorf("ls --format json = %q", got)
	}
	if out, err := c.run("network", "ls", "--filter", "colour=red"); err == nil || !strings.Contains(out, "colour") {
		t.Errorf("unknown filter: %v %s", err, out)
	}
	if out, err := c.run("network", "ls", "--filter", "dangling=maybe"); err == nil || !strings.Contains(out, "dangling") {
		t.Errorf("bad dangling: %v %s", err, out)
	}

	// connect by name and by ID prefix, with --ip and --alias; traffic
	d.MustTether("run", "-d", "--name", "web", "--network", "none", "--", "sleep", "600")
	d.MustTether("run", "-d", "--name", "app", "--network", "spare", "--", "sleep", "600")
	var sb struct{ ID string }
	d.InspectJSON(&sb, "sandbox", "inspect", "app")
	// "none" sandboxes cannot join other networks: web leaves none first.
	c.must("network", "disconnect", "none", "web")
	c.must("network", "connect", "--ip", "10.61.0.200", "--alias", "www", "--alias", "site", "front", "web")
	c.must("network", "connect", "front", sb.ID[:8])
	if out, err := c.run("network", "connect", "front", "nosuch"); err == nil || !strings.Contains(out, "nosuch") {
		t.Errorf("connect unknown sandbox: %v %s", err, out)
	}
	if out, err := c.run("network", "connect", "--ip", "10.99.0.5", "back", "app"); err == nil || !strings.Contains(out, "10.99.0.5") {
		t.Errorf("connect with ip outside subnet: %v %s", err, out)
	}
	if err := json.Unmarshal([]byte(c.must("network", "inspect", "front")), &raw); err != nil {
		t.Fatal(err)
	}
	var withEPs []struct {
		Containers map[string]json.RawMessage
	}
	_ = json.Unmarshal([]byte(c.must("network", "inspect", "front")), &withEPs)
	if len(withEPs) != 1 || len(withEPs[0].Containers) != 2 {
		t.Fatalf("front Containers = %v", withEPs)
	}
	for cid, ep := range withEPs[0].Containers {
		sameShape(t, "Containers["+cid[:12]+"]", ep, network.EndpointResource{})
	}
	if got := strings.TrimSpace(c.must("network", "inspect", "-f", "{{range .Containers}}{{.Name}}={{.IPv4Address}} {{end}}", "front")); !strings.Contains(got, "web=10.61.0.200/24") {
		t.Errorf("front endpoints %q", got)
	}
	for _, name := range []string{"web", "www", "site", "web.front"} {
		if _, err := d.Tether("exec", "app", "--", "ping", "-c1", "-W2", name); err != nil {
			t.Errorf("app cannot ping %s after docker network connect: %v", name, err)
		}
	}
	if got := ls("--filter", "dangling=true"); !slices.Equal(got, []string{"back"}) {
		t.Errorf("dangling after connect = %v", got)
	}

	// disconnect, --force on a sandbox that is not connected
	c.must("network", "disconnect", "front", "app")
	if _, err := d.Tether("exec", "app", "--", "ping", "-c1", "-W1", "10.61.0.200"); err == nil {
		t.Error("app still reaches web after disconnect")
	}
	if out, err := c.run("network", "disconnect", "front", "app"); err == nil || !strings.Contains(out, "app") {
		t.Errorf("second disconnect: %v %s", err, out)
	}
	c.must("network", "disconnect", "--force", "front", "web")

	// rm several at once; one missing fails the command but removes the others
	c.must("network", "create", "--subnet", "10.65.0.0/24", "r1")
	c.must("network", "create", "--subnet", "10.66.0.0/24", "r2")
	if got := lines(c.must("network", "rm", "r1", "r2")); !slices.Equal(got, []string{"r1", "r2"}) {
		t.Errorf("rm printed %v", got)
	}
	c.must("network", "create", "--subnet", "10.65.0.0/24", "r3")
	if out, err := c.run("network", "rm", "r3", "nosuch"); err == nil || !strings.Contains(out, "nosuch") || !strings.Contains(out, "r3") {
		t.Errorf("rm r3 nosuch: %v %s", err, out)
	}
	if got := ls("--filter", "name=r3"); len(got) != 0 {
		t.Errorf("r3 survived rm: %v", got)
	}
	if out, err := c.run("network", "rm", "spare"); err == nil || !strings.Contains(out, "active endpoints") {
		t.Errorf("rm in-use network: %v %s", err, out)
	}
	if out, err := c.run("network", "rm", "bridge"); err == nil || !strings.Contains(out, "pre-defined") {
		t.Errorf("rm bridge: %v %s", err, out)
	}

	// prune: label filters, until, and in-use networks kept
	c.must("network", "create", "--subnet", "10.67.0.0/24", "--label", "keep=yes", "p1")
	c.must("network", "create", "--subnet", "10.68.0.0/24", "p2")
	out := c.must("network", "prune", "-f", "--filter", "label!=keep", "--filter", "until=1h")
	if strings.Contains(out, "p2") || strings.Contains(out, "p1") {
		t.Errorf("prune until=1h deleted something younger than an hour:\n%s", out)
	}
	out = c.must("network", "prune", "-f", "--filter", "label=team=db")
	if got := lines(strings.TrimPrefix(out, "Deleted Networks:")); !slices.Equal(got, []string{"back"}) {
		t.Errorf("prune label=team=db: %q", out)
	}
	out = c.must("network", "prune", "-f", "--filter", "label!=keep=yes")
	// front is unused by now; spare is in use by app
	if got := lines(strings.TrimPrefix(out, "Deleted Networks:")); !slices.Equal(got, []string{"front", "p2"}) {
		t.Errorf("prune label!=keep=yes:\n%s", out)
	}
	if got := ls("--filter", "type=custom"); !slices.Equal(got, []string{"p1", "spare"}) {
		t.Errorf("after prunes: %v", got)
	}
	if out, err := c.run("network", "prune", "-f", "--filter", "until=soon"); err == nil || !strings.Contains(out, "until") {
		t.Errorf("prune bad until: %v %s", err, out)
	}

	// events: the whole story, in Docker's format, filtered by type
	evs := c.must("events", "--since", fmt.Sprint(start.Unix()), "--until", fmt.Sprint(time.Now().Unix()+1),
		"--filter", "type=network", "--format", "{{json .}}")
	var seen []string
	for _, l := range strings.Split(strings.TrimSpace(evs), "\n") {
		var m events.Message
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("event line %q: %v", l, err)
		}
		if m.Type != "network" || m.Scope != "local" || m.TimeNano == 0 || m.Actor.Attributes["name"] == "" {
			t.Errorf("event %+v", m)
		}
		if m.Actor.Attributes["name"] == "front" {
			seen = append(seen, string(m.Action))
		}
	}
	if want := []string{"create", "connect", "connect", "disconnect", "disconnect", "destroy"}; !slices.Equal(seen, want) {
		t.Errorf("events of front = %v, want %v", seen, want)
	}
}

// docker events streams live: an event appears while the command runs, and
// filters on event and network apply.
func TestDockerCLIEventsLive(t *testing.T) {
	_, d := host(t)
	c := newDockerCLI(t, d)
	cmd := exec.Command(c.bin, "events", "--filter", "type=network", "--filter", "event=create",
		"--filter", "event=destroy", "--format", "{{.Action}} {{.Actor.Attributes.name}}")
	cmd.Env = c.env
	var buf strings.Builder
	outw := &lockedWriter{w: &buf}
	cmd.Stdout = outw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	time.Sleep(300 * time.Millisecond) // let the stream open; the assertions wait on content
	c.must("network", "create", "--subnet", "10.69.0.0/24", "live1")
	d.MustTether("sandbox", "create", "--name", "s", "--network", "live1")
	d.MustTether("rm", "s")
	c.must("network", "rm", "live1")
	want := "create live1\ndestroy live1\n"
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && outw.String() != want {
		time.Sleep(50 * time.Millisecond)
	}
	if got := outw.String(); got != want {
		t.Errorf("live events = %q, want %q", got, want)
	}
}

// lockedWriter collects a command's output for reading while it runs.
type lockedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}
