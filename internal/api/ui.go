package api

// The topology picture (docs/observability.md): the graph in
// JSON, DOT or SVG, and a page that draws the SVG and redraws it when the
// events stream says something changed. Both are read-only and served on
// the API's listeners, so they get the API's authentication (the socket's
// permissions, TLS client certificates).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/topology"
)

// clusterNodes is what the picture asks of a backend beyond Backend: the
// cluster's nodes (*engine.Engine has it). Without it the picture shows
// this host and the hosts its overlay peers name.
type clusterNodes interface {
	ClusterNodes() (self cluster.Node, nodes []cluster.Node)
}

// pageCSP lets the page load its own script, style and data and nothing
// else: no inline script or style, no other origin, no framing.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// graphFormats are the renderings of GET /tether/v1/graph by format.
var graphFormats = map[string]struct {
	contentType string
	render      func(io.Writer, topology.Graph) error
}{
	"json": {"application/json", func(w io.Writer, g topology.Graph) error { return jsonTo(w, g) }},
	"dot":  {"text/vnd.graphviz; charset=utf-8", topology.DOT},
	"svg":  {"image/svg+xml", topology.SVG},
}

// uiFiles are the page's files under /tether/v1/ui/, with their types.
var uiFiles = map[string]string{
	"app.js":  "text/javascript; charset=utf-8",
	"app.css": "text/css; charset=utf-8",
}

// uiRoutes serves the topology graph and its page (GET /tether/v1/ui).
func (s *Server) uiRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /tether/v1/graph", s.graph)
	m.HandleFunc("GET /tether/v1/ui", s.uiPage)
	m.HandleFunc("GET /tether/v1/ui/{$}", s.uiSlash)
	m.HandleFunc("GET /tether/v1/ui/{file}", s.uiFile)
}

// graph answers the picture as ?format= says (json when not given).
func (s *Server) graph(w http.ResponseWriter, r *http.Request) {
	format := r.URL.Query().Get("format")
	if format == "" {
		format = "json"
	}
	f, ok := graphFormats[format]
	if !ok {
		writeError(w, http.StatusBadRequest, fmt.Errorf("invalid format %q: must be json, dot or svg", format))
		return
	}
	var b bytes.Buffer
	if err := f.render(&b, topology.Build(s.graphInput())); err != nil {
		s.fail(w, fmt.Errorf("render the topology as %s: %w", format, err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	// opened on its own, the SVG may run nothing and load nothing
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'self'")
	_, _ = w.Write(b.Bytes())
}

func (s *Server) graphInput() topology.Input {
	in := topology.Input{Networks: s.eng.Networks(), Sandboxes: s.eng.Sandboxes(), Links: s.eng.Links()}
	in.HostName, _ = os.Hostname()
	if c, ok := s.eng.(clusterNodes); ok {
		in.Self, in.Nodes = c.ClusterNodes()
	}
	return in
}

func (s *Server) uiPage(w http.ResponseWriter, _ *http.Request) {
	s.uiServe(w, "index.html", "text/html; charset=utf-8")
}

// uiSlash sends /tether/v1/ui/ to the page (its links are relative to
// /tether/v1/ui). The Location is relative, so the client resolves it
// against the path it asked for, /vX.Y prefix included (http.Redirect
// would resolve it here, against the path without the prefix).
func (s *Server) uiSlash(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Location", "../ui")
	w.WriteHeader(http.StatusMovedPermanently)
}

func (s *Server) uiFile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	ct, ok := uiFiles[name]
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no such file %q in the topology page", name))
		return
	}
	s.uiServe(w, name, ct)
}

func (s *Server) uiServe(w http.ResponseWriter, name, contentType string) {
	b, err := fs.ReadFile(topology.Page(), name)
	if err != nil {
		s.fail(w, fmt.Errorf("topology page: %w", err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

// jsonTo writes v as indented JSON.
func jsonTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
