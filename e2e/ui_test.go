package e2e

// The topology picture end to end: `tether network graph` against a real
// daemon, and the page GET /tether/v1/ui in a real headless Chromium
// (ui_cdp_test.go): drawn with every sandbox and network, screenshotted,
// and updated live from the events stream, across a daemon restart.

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// uiAPI is the daemon's TCP API in its own namespace (so the browser,
// run there too, reaches it on 127.0.0.1).
const uiAPI = "127.0.0.1:49080"

// topologyHost starts a daemon with a TCP API in a t20t namespace and
// builds: networks front and back, sandboxes web (front, a published
// port), db (back) and both (front and back), a link web-db.
func topologyHost(t *testing.T) (string, *testutil.Daemon) {
	return topologyHostMode(t, testutil.StartNsenter)
}

// topologyHostMode is topologyHost started the way mode starts a daemon.
// Under a mode with a mount namespace of its own the daemon keeps across
// a restart only sandboxes a process holds (docs/sandboxes.md), so there
// each sandbox runs one.
func topologyHostMode(t *testing.T, mode testutil.StartMode) (string, *testutil.Daemon) {
	t.Helper()
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "t20t")
	d := testutil.NewDaemon(t, ns, "-H", "tcp://"+uiAPI, "--tls=false")
	d.Mode = mode
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	d.MustTether("network", "create", "front")
	d.MustTether("network", "create", "--internal", "back")
	newTopologySandbox(t, d, mode, "web", "--network", "front", "-p", "127.0.0.1:49081:80")
	newTopologySandbox(t, d, mode, "db", "--network", "back")
	newTopologySandbox(t, d, mode, "both", "--network", "front", "--network", "back")
	d.MustTether("link", "create", "--name", "web-db", "web", "db")
	return ns, d
}

// newTopologySandbox creates sandbox name: bare under StartNsenter, with a
// process (run -d) under the other modes.
func newTopologySandbox(t *testing.T, d *testutil.Daemon, mode testutil.StartMode, name string, args ...string) {
	t.Helper()
	if mode == testutil.StartNsenter {
		d.MustTether(append([]string{"sandbox", "create", "--name", name}, args...)...)
		return
	}
	runDetached(t, d, name, append(args, "--", "sleep", "600")...)
}

// drawnNames lists, from a serialized DOM or SVG, the names of the
// elements of a class (sandbox, network, link) by their data attribute.
func drawnNames(dom, class, attr string) []string {
	re := regexp.MustCompile(`<g class="` + class + `" data-` + attr + `="([^"]*)"`)
	var out []string
	for _, m := range re.FindAllStringSubmatch(dom, -1) {
		out = append(out, m[1])
	}
	slices.Sort(out)
	return out
}

// networkNames are the daemon's networks (the predefined ones included).
func networkNames(t *testing.T, d *testutil.Daemon) []string {
	t.Helper()
	names := strings.Fields(d.MustTether("network", "ls", "--format", "{{.Name}}"))
	slices.Sort(names)
	return names
}

func TestTopologyGraphCLI(t *testing.T) {
	_, d := topologyHost(t)
	nets := networkNames(t, d)
	svg := d.MustTether("network", "graph", "--format", "svg")
	if got := drawnNames(svg, "network", "network"); !slices.Equal(got, nets) {
		t.Errorf("SVG networks %v, want %v", got, nets)
	}
	if got, want := drawnNames(svg, "sandbox", "sandbox"), []string{"both", "db", "web"}; !slices.Equal(got, want) {
		t.Errorf("SVG sandboxes %v, want %v", got, want)
	}
	if !strings.Contains(svg, `data-port="127.0.0.1:49081-&gt;80/tcp"`) || !strings.Contains(svg, `data-link="web-db"`) {
		t.Errorf("SVG lacks the port or the link:\n%s", svg)
	}
	dot := d.MustTether("network", "graph")
	for _, want := range []string{`graph "tether" {`, `label="web\n127.0.0.1:49081->80/tcp"`, `label="db"`,
		`label="front\nbridge`, `label="back\nbridge`, `label="web-db\n`, "internal"} {
		if !strings.Contains(dot, want) {
			t.Errorf("DOT lacks %s:\n%s", want, dot)
		}
	}
	var g struct {
		Sandboxes []struct{ Name string }
		Links     []struct{ Name string }
	}
	if err := json.Unmarshal([]byte(d.MustTether("network", "graph", "--format", "json")), &g); err != nil || len(g.Sandboxes) != 3 || len(g.Links) != 1 {
		t.Errorf("JSON graph %+v: %v", g, err)
	}
	// a bad format is refused by the daemon, naming the parameter, and
	// changes nothing
	before := d.MustTether("network", "graph", "--format", "json")
	code, body := newAPI(t, d).call("GET", "/tether/v1/graph?format=png", nil)
	if code != http.StatusBadRequest || !strings.Contains(body, `invalid format \"png\"`) {
		t.Errorf("format=png: %d %s", code, body)
	}
	if after := d.MustTether("network", "graph", "--format", "json"); after != before {
		t.Errorf("the refused request changed the graph:\n%s\n%s", before, after)
	}
}

// TestTopologyPage loads the page once in a headless Chromium: the DOM after
// its script ran has every network and sandbox drawn, and a screenshot of it
// is a PNG showing the picture.
func TestTopologyPage(t *testing.T) {
	ns, d := topologyHost(t)
	url := "http://" + uiAPI + "/tether/v1/ui"
	nets := networkNames(t, d)

	dom := string(runBrowser(t, ns, "--dump-dom", "--virtual-time-budget=5000", url))
	if !strings.Contains(dom, `data-state="live"`) {
		t.Errorf("the page did not reach the live state:\n%s", dom)
	}
	if got := drawnNames(dom, "network", "network"); !slices.Equal(got, nets) {
		t.Errorf("networks drawn %v, want %v\n%s", got, nets, dom)
	}
	if got, want := drawnNames(dom, "sandbox", "sandbox"), []string{"both", "db", "web"}; !slices.Equal(got, want) {
		t.Errorf("sandboxes drawn %v, want %v", got, want)
	}
	if got := drawnNames(dom, "link", "link"); !slices.Equal(got, []string{"web-db"}) {
		t.Errorf("links drawn %v", got)
	}
	if got := drawnNames(dom, "endpoint", "sandbox"); !slices.Equal(got, []string{"both", "both", "db", "web"}) {
		t.Errorf("endpoints drawn for %v", got)
	}

	shot := filepath.Join(t.TempDir(), "topology.png")
	runBrowser(t, ns, "--screenshot="+shot, "--window-size=1400,900", "--hide-scrollbars", "--virtual-time-budget=5000", url)
	checkScreenshot(t, shot)
}

// checkScreenshot: the file is a PNG of the window's size in which the
// bridge networks' buses (their colour, #2f6db5) were painted.
func checkScreenshot(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", path, err)
	}
	if sz := img.Bounds().Size(); sz.X < 800 || sz.Y < 400 {
		t.Errorf("screenshot is %v", sz)
	}
	if n := countColor(img, color.RGBA{0x2f, 0x6d, 0xb5, 0xff}); n == 0 {
		t.Errorf("screenshot %s shows no bridge network (no pixel of #2f6db5)", path)
	}
}

func countColor(img image.Image, c color.RGBA) int {
	n := 0
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			if color.RGBAModel.Convert(img.At(x, y)) == c {
				n++
			}
		}
	}
	return n
}

// TestTopologyPageLive keeps the page open (a DevTools session) while the
// daemon changes: a sandbox created appears and one removed disappears
// without a reload, and after a daemon restart the page reconnects to the
// events stream and keeps following.
func TestTopologyPageLive(t *testing.T) { forModes(t, topologyPageLive) }

func topologyPageLive(t *testing.T, mode testutil.StartMode) {
	ns, d := topologyHostMode(t, mode)
	page := openPage(t, ns, "http://"+uiAPI+"/tether/v1/ui")
	drawn := func(name string) string {
		return `document.querySelector('g.sandbox[data-sandbox=` + jsString(name) + `]')`
	}
	page.waitTrue("the page is live", `document.body && document.body.dataset.state === 'live'`, time.Minute)
	for _, name := range []string{"web", "db", "both"} {
		page.waitTrue(name+" is drawn", drawn(name), 10*time.Second)
	}
	// a mark the page does not set: gone if the page reloaded
	var mark bool
	page.eval(`(window.t20tMark = true)`, &mark)

	newTopologySandbox(t, d, mode, "late", "--network", "front")
	page.waitTrue("the new sandbox late is drawn", drawn("late"), time.Minute)
	d.MustTether("sandbox", "rm", "-f", "db") // -f: under a mode with a mount namespace of its own, db runs a process
	page.waitTrue("the removed sandbox db is gone", "!"+drawn("db"), time.Minute)
	page.waitTrue("the same page (no reload)", `window.t20tMark === true`, time.Second)

	restart(t, d)
	d.MustTether("sandbox", "create", "--name", "after-restart", "--network", "back")
	page.waitTrue("after a restart, the new sandbox after-restart is drawn", drawn("after-restart"), time.Minute)
	page.waitTrue("live again", `document.body.dataset.state === 'live'`, time.Minute)

	shot := filepath.Join(t.TempDir(), "live.png")
	if err := os.WriteFile(shot, page.screenshot(), 0o644); err != nil {
		t.Fatal(err)
	}
	checkScreenshot(t, shot)
	var names []string
	page.eval(`Array.from(document.querySelectorAll('g.sandbox')).map(g => g.dataset.sandbox).sort()`, &names)
	if want := []string{"after-restart", "both", "late", "web"}; !slices.Equal(names, want) {
		t.Errorf("sandboxes drawn at the end %v, want %v", names, want)
	}
}

// graphJSON is a daemon's topology as JSON (graphOf).
type graphJSON struct {
	Hosts []struct {
		ID, Name   string
		Self, Live bool
	}
	Sandboxes []struct {
		Name, Host string
		Remote     bool
		Endpoints  []struct{ Addresses []string }
	}
}

func graphOf(t *testing.T, d *testutil.Daemon) graphJSON {
	t.Helper()
	var g graphJSON
	if err := json.Unmarshal([]byte(d.MustTether("network", "graph", "--format", "json")), &g); err != nil {
		t.Fatal(err)
	}
	return g
}

func (g graphJSON) self() string {
	for _, h := range g.Hosts {
		if h.Self {
			return h.ID
		}
	}
	return ""
}

// peer is "host ID/live" of a remote sandbox's host ("" when not drawn).
func (g graphJSON) peer(name string) string {
	for _, s := range g.Sandboxes {
		if s.Name == name && s.Remote {
			for _, h := range g.Hosts {
				if h.ID == s.Host {
					return h.ID + "/" + strconv.FormatBool(h.Live)
				}
			}
		}
	}
	return ""
}

// TestTopologyOverlayPeers: on two hosts of an etcd cluster, each host's
// picture has the other host and its sandbox on the overlay as a live peer;
// when the other host dies, it is drawn down once its lease lapses.
func TestTopologyOverlayPeers(t *testing.T) {
	m := newMultiHost(t, "etcd", 2)
	h1, h2 := m.d[0], m.d[1]
	h1.MustTether("network", "create", "-d", "overlay", "--subnet", "10.77.0.0/24", "ov")
	waitFor(t, "ov on host 2", 5*time.Second, func() bool { return netID(h2, "ov") != "" })
	h1.MustTether("sandbox", "create", "--name", "a", "--network", "ov")
	h2.MustTether("sandbox", "create", "--name", "b", "--network", "ov")
	id1, id2 := graphOf(t, h1).self(), graphOf(t, h2).self()
	if id1 == "" || id2 == "" || id1 == id2 {
		t.Fatalf("node IDs %q and %q", id1, id2)
	}
	waitFor(t, "host 1 draws b as a live peer on host 2", 10*time.Second, func() bool { return graphOf(t, h1).peer("b") == id2+"/true" })
	waitFor(t, "host 2 draws a as a live peer on host 1", 10*time.Second, func() bool { return graphOf(t, h2).peer("a") == id1+"/true" })
	svg := h1.MustTether("network", "graph", "--format", "svg")
	if !regexp.MustCompile(`<g class="sandbox" data-sandbox="b" data-id="[0-9a-f]+" data-host="` + regexp.QuoteMeta(id2) + `" data-remote="true">`).MatchString(svg) {
		t.Errorf("host 1's SVG does not draw b as host 2's peer:\n%s", svg)
	}
	if err := h2.Kill(); err != nil {
		t.Fatal(err)
	}
	// its registration lapses with its lease; its endpoint records stay
	// (a host that comes back keeps them): drawn on a host that is down
	waitFor(t, "host 1 draws host 2 down, with its peer b", 5*clusterTTL, func() bool { return graphOf(t, h1).peer("b") == id2+"/false" })
	if svg := h1.MustTether("network", "graph", "--format", "svg"); !strings.Contains(svg, "(down)") {
		t.Errorf("host 1's SVG does not say host 2 is down:\n%s", svg)
	}
}
