package api

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/engine"
	"github.com/tether-net/tether/internal/topology"
)

// topoFake is a backend with two networks, two sandboxes (one with a
// published port) and a link between them.
func topoFake() *fakeBackend {
	return &fakeBackend{
		networks: []*engine.NetworkView{
			{Network: engine.Network{ID: "n1", Name: "front", Driver: "bridge", Subnet: netip.MustParsePrefix("10.1.0.0/24")}},
			{Network: engine.Network{ID: "n2", Name: `back<&">`, Driver: "bridge", Subnet: netip.MustParsePrefix("10.2.0.0/24")}},
		},
		sandboxes: []*engine.Sandbox{
			{ID: "s1", Name: "web", Endpoints: []*engine.Endpoint{{NetworkID: "n1", IfName: "eth0", Address: netip.MustParsePrefix("10.1.0.2/24"),
				Ports: []engine.PortBinding{{Proto: "tcp", HostPort: 8080, ContainerPort: 80}}}}},
			{ID: "s2", Name: "db", Endpoints: []*engine.Endpoint{{NetworkID: "n2", IfName: "eth0", Address: netip.MustParsePrefix("10.2.0.2/24")}}},
		},
		link: &engine.Link{ID: "l1", Name: "web-db", A: "s1", B: "s2"},
	}
}

func TestGraph(t *testing.T) {
	tests := []struct {
		path, contentType string
		want              []string // in the body
	}{
		{"/tether/v1/graph", "application/json", []string{`"name": "front"`, `"name": "web"`, `"hostPort": 8080`, `"name": "web-db"`}},
		{"/tether/v1/graph?format=json", "application/json", []string{`"name": "db"`}},
		{"/tether/v1/graph?format=dot", "text/vnd.graphviz; charset=utf-8", []string{"graph \"tether\" {", `label="back<&\">\nbridge · 10.2.0.0/24"`, "0.0.0.0:8080->80/tcp"}},
		{"/tether/v1/graph?format=svg", "image/svg+xml", []string{`data-network="back&lt;&amp;&#34;&gt;"`, `data-sandbox="web"`, `data-link="web-db"`}},
		{"/v1.51/tether/v1/graph?format=svg", "image/svg+xml", []string{`data-sandbox="db"`}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			f := topoFake()
			w := call{method: "GET", path: tt.path}.serve(t, f)
			if w.Code != http.StatusOK || w.Header().Get("Content-Type") != tt.contentType {
				t.Fatalf("%d %q: %s", w.Code, w.Header().Get("Content-Type"), w.Body)
			}
			for _, s := range tt.want {
				if !strings.Contains(w.Body.String(), s) {
					t.Errorf("body lacks %s:\n%s", s, w.Body)
				}
			}
			if csp := w.Header().Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none'") {
				t.Errorf("Content-Security-Policy %q", csp)
			}
			if m := f.mutated(); len(m) != 0 {
				t.Errorf("a read changed state: %v", m)
			}
		})
	}
}

// The JSON answer is the topology model.
func TestGraphJSON(t *testing.T) {
	f := &clusterFake{fakeBackend: topoFake(), self: cluster.Node{ID: "node1", Name: "h1"},
		nodes: []cluster.Node{{ID: "node1", Name: "h1"}, {ID: "node2", Name: "h2"}}}
	w := httptest.NewRecorder()
	New(f, slog.New(slog.DiscardHandler)).ServeHTTP(w, httptest.NewRequest("GET", "/tether/v1/graph", nil))
	var g topology.Graph
	if err := json.Unmarshal(w.Body.Bytes(), &g); err != nil {
		t.Fatalf("%d %s: %v", w.Code, w.Body, err)
	}
	var hosts, sbs []string
	for _, h := range g.Hosts {
		hosts = append(hosts, h.ID+"="+h.Name)
	}
	for _, s := range g.Sandboxes {
		sbs = append(sbs, s.Host+"/"+s.Name)
	}
	if !slices.Equal(hosts, []string{"node1=h1", "node2=h2"}) || !slices.Equal(sbs, []string{"node1/db", "node1/web"}) ||
		len(g.Networks) != 2 || len(g.Links) != 1 {
		t.Errorf("hosts %v sandboxes %v graph %+v", hosts, sbs, g)
	}
}

func TestGraphBadFormat(t *testing.T) {
	for _, format := range []string{"png", "SVG", "dot%00", "%3Cscript%3E"} {
		f := topoFake()
		w := call{method: "GET", path: "/tether/v1/graph?format=" + format}.serve(t, f)
		var m struct{ Message string }
		decodeBody(t, w, &m)
		if w.Code != http.StatusBadRequest || !strings.HasPrefix(m.Message, "invalid format ") || !strings.Contains(m.Message, "json, dot or svg") {
			t.Errorf("format %s: %d %q", format, w.Code, m.Message)
		}
		if m := f.mutated(); len(m) != 0 {
			t.Errorf("format %s: a refused request changed state: %v", format, m)
		}
	}
}

var scriptTag = regexp.MustCompile(`(?is)<script\b([^>]*)>(.*?)</script>`)

func TestUIPage(t *testing.T) {
	tests := []struct {
		path, contentType string
		want              string
	}{
		{"/tether/v1/ui", "text/html; charset=utf-8", `<main id="graph">`},
		{"/v1.51/tether/v1/ui", "text/html; charset=utf-8", `<script src="ui/app.js" defer></script>`},
		{"/tether/v1/ui/app.js", "text/javascript; charset=utf-8", "'../../events'"},
		{"/tether/v1/ui/app.css", "text/css; charset=utf-8", "#status"},
	}
	for _, tt := range tests {
		w := call{method: "GET", path: tt.path}.serve(t, topoFake())
		h := w.Header()
		if w.Code != http.StatusOK || h.Get("Content-Type") != tt.contentType || !strings.Contains(w.Body.String(), tt.want) {
			t.Errorf("%s: %d %q, body lacks %s", tt.path, w.Code, h.Get("Content-Type"), tt.want)
		}
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self';", "connect-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: Content-Security-Policy %q lacks %s", tt.path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") {
			t.Errorf("%s: Content-Security-Policy %q allows something unsafe", tt.path, csp)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v", tt.path, h)
		}
	}
}

// The policy forbids inline script and style: the page has none, and it
// loads nothing from another origin.
func TestUIPageSelfContained(t *testing.T) {
	body := call{method: "GET", path: "/tether/v1/ui"}.serve(t, topoFake()).Body.String()
	scripts := scriptTag.FindAllStringSubmatch(body, -1)
	if len(scripts) != 1 {
		t.Fatalf("%d scripts in the page", len(scripts))
	}
	for _, s := range scripts {
		if strings.TrimSpace(s[2]) != "" || !strings.Contains(s[1], `src="ui/`) {
			t.Errorf("script %q is inline or not the page's own", s[0])
		}
	}
	for _, bad := range []string{"<style", " style=", " onload=", " onclick=", "http://", "https://", "//"} {
		if strings.Contains(body, bad) {
			t.Errorf("page has %q", bad)
		}
	}
}

func TestUIFiles(t *testing.T) {
	tests := []struct {
		path     string
		code     int
		location string
	}{
		{"/tether/v1/ui/", http.StatusMovedPermanently, "/tether/v1/ui"},
		{"/v1.51/tether/v1/ui/", http.StatusMovedPermanently, "/v1.51/tether/v1/ui"},
		{"/tether/v1/ui/index.html", http.StatusNotFound, ""},
		{"/tether/v1/ui/..%2f..%2fserver.go", http.StatusNotFound, ""},
		{"/tether/v1/ui/nope.js", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		ts := httptest.NewServer(newFakeServer(topoFake()))
		c := ts.Client()
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := c.Get(ts.URL + tt.path)
		ts.Close()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := ""
		if resp.StatusCode == http.StatusMovedPermanently {
			u, err := resp.Location()
			if err != nil {
				t.Fatal(err)
			}
			loc = u.Path
		}
		if resp.StatusCode != tt.code || loc != tt.location {
			t.Errorf("%s: %d to %q, want %d to %q", tt.path, resp.StatusCode, loc, tt.code, tt.location)
		}
	}
}
