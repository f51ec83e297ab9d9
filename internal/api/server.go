// Package api is the daemon's HTTP front end: the Docker Engine API's
// network routes (so the stock docker CLI and the moby Go client work) and
// Tether's own routes under /tether/v1 for sandboxes, run and exec.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/tether-net/tether/internal/engine"
)

const (
	// APIVersion is the highest Docker Engine API version served.
	APIVersion = "1.51"
	// MinAPIVersion is the lowest one.
	MinAPIVersion = "1.24"
	// maxBody bounds request bodies.
	maxBody = 1 << 20
)

// Version is the daemon's version, set by main.
var Version = "dev"

// Server serves the API of one backend.
type Server struct {
	eng Backend
	log *slog.Logger
	mux *http.ServeMux
	// closing is closed by CloseStreams: open event streams end.
	closing   chan struct{}
	closeOnce sync.Once
}

// New builds the handler tree over b (the daemon passes its *engine.Engine).
func New(b Backend, log *slog.Logger) *Server {
	s := &Server{eng: b, log: log, mux: http.NewServeMux(), closing: make(chan struct{})}
	s.routes()
	return s
}

// CloseStreams ends the event streams open now and later: the daemon
// calls it as it stops, or http.Server.Shutdown would wait for every
// `docker events` client and topology page until its timeout.
func (s *Server) CloseStreams() { s.closeOnce.Do(func() { close(s.closing) }) }

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /_ping", s.ping)
	m.HandleFunc("HEAD /_ping", s.ping)
	m.HandleFunc("GET /version", s.version)
	m.HandleFunc("GET /info", s.info)
	m.HandleFunc("GET /networks", s.listNetworks)
	m.HandleFunc("GET /networks/{$}", s.listNetworks)
	m.HandleFunc("POST /networks/create", s.createNetwork)
	m.HandleFunc("POST /networks/prune", s.pruneNetworks)
	m.HandleFunc("GET /networks/{id}", s.inspectNetwork)
	m.HandleFunc("DELETE /networks/{id}", s.removeNetwork)
	m.HandleFunc("POST /networks/{id}/connect", s.connect)
	m.HandleFunc("POST /networks/{id}/disconnect", s.disconnect)
	m.HandleFunc("GET /tether/v1/sandboxes", s.listSandboxes)
	m.HandleFunc("POST /tether/v1/sandboxes", s.createSandbox)
	m.HandleFunc("GET /tether/v1/sandboxes/{id}", s.inspectSandbox)
	m.HandleFunc("DELETE /tether/v1/sandboxes/{id}", s.removeSandbox)
	m.HandleFunc("POST /tether/v1/sandboxes/{id}/exec", s.exec)
	s.cniRoutes(m)
	s.linkRoutes(m)
	m.HandleFunc("GET /events", s.events)
	// Observability (issue 20): each in its own file.
	s.metricsRoutes(m)
	s.doctorRoutes(m)
	s.uiRoutes(m)
}

// unrouted answers a request no route matched: 405 with the allowed
// methods when the path exists under another method, 404 otherwise, both
// as Docker's JSON error body (the mux's own answers are plain text).
func (s *Server) unrouted(w http.ResponseWriter, r *http.Request, h http.Handler) {
	probe := &statusProbe{header: http.Header{}}
	h.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", probe.header.Get("Allow"))
		writeError(w, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed for %s (allowed: %s)", r.Method, r.URL.Path, probe.header.Get("Allow")))
		return
	}
	writeError(w, http.StatusNotFound, errors.New("page not found")) // Docker's exact body
}

// statusProbe records what the mux's fallback handler would answer.
type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header         { return p.header }
func (p *statusProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *statusProbe) WriteHeader(code int)        { p.status = code }

var versionPrefix = regexp.MustCompile(`^/v([0-9]+)\.([0-9]+)(/.*)$`)

// ServeHTTP sets Docker's identity headers, checks and strips the /vX.Y
// prefix, bounds the body and dispatches.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Api-Version", APIVersion)
	h.Set("Ostype", runtime.GOOS)
	h.Set("Server", "Tether/"+Version+" ("+runtime.GOOS+")")
	h.Set("Docker-Experimental", "false")
	if m := versionPrefix.FindStringSubmatch(r.URL.Path); m != nil {
		if err := checkVersion(m[1], m[2]); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		r.URL.Path = m[3]
		if r.URL.RawPath != "" {
			if rm := versionPrefix.FindStringSubmatch(r.URL.RawPath); rm != nil {
				r.URL.RawPath = rm[3]
			}
		}
	}
	if err := crossSite(r); err != nil {
		writeError(w, http.StatusForbidden, err)
		return
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	}
	s.log.Debug("api", "method", r.Method, "path", r.URL.Path)
	if h, pattern := s.mux.Handler(r); pattern == "" {
		s.unrouted(w, r, h)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// crossSite refuses a request that changes state and that a web browser
// sent on another site's behalf: one whose Sec-Fetch-Site says it came from
// another site, or whose Origin is not the host it was sent to. A browser
// holding a client certificate for a TLS API (or reaching a local TCP one)
// would otherwise let any page it shows POST to it: create networks, exec
// in sandboxes. Docker clients and the CLI send neither header; the
// topology page (ui.go) only reads.
func crossSite(r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return fmt.Errorf("cross-site request refused (Sec-Fetch-Site: %s): the API takes changes only from its own clients", site)
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			return fmt.Errorf("cross-site request refused (Origin %q is not %q): the API takes changes only from its own clients", o, r.Host)
		}
	}
	return nil
}

func checkVersion(major, minor string) error {
	v := major + "." + minor
	if cmpVersion(v, APIVersion) > 0 {
		return fmt.Errorf("client version %s is too new. Maximum supported API version is %s", v, APIVersion)
	}
	if cmpVersion(v, MinAPIVersion) < 0 {
		return fmt.Errorf("client version %s is too old. Minimum supported API version is %s, please upgrade your client to a newer version", v, MinAPIVersion)
	}
	return nil
}

func cmpVersion(a, b string) int {
	pa, pb := strings.SplitN(a, ".", 2), strings.SplitN(b, ".", 2)
	for i := range 2 {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

func (s *Server) ping(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-cache, no-store, must-revalidate")
	h.Set("Pragma", "no-cache")
	h.Set("Builder-Version", "")
	h.Set("Swarm", "inactive")
	if r.Method == http.MethodHead {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Content-Length", "0")
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "OK")
}

// writeJSON answers with a JSON body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// writeError answers {"message": ...} with exactly the content type the
// docker CLI looks for.
func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"message": err.Error()})
}

// fail maps an engine error to its status code.
func (s *Server) fail(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch engine.KindOf(err) {
	case engine.KindInvalid:
		status = http.StatusBadRequest
	case engine.KindNotFound:
		status = http.StatusNotFound
	case engine.KindConflict:
		status = http.StatusConflict
	case engine.KindForbidden:
		status = http.StatusForbidden
	}
	if status == http.StatusInternalServerError {
		s.log.Error("request failed", "err", err)
	}
	writeError(w, status, err)
}

// decode reads a JSON body into v; errors name the offending field and
// answer 400 (413 for an oversized body).
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	var tooBig *http.MaxBytesError
	dec := json.NewDecoder(r.Body)
	err := dec.Decode(v)
	if err == nil {
		// Only white space may follow (dec.More is false on a stray '}' or ']').
		_, err = dec.Token()
		if errors.Is(err, io.EOF) {
			return true
		}
		if !errors.As(err, &tooBig) {
			err = errors.New("unexpected data after the JSON object")
		}
	}
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request body is larger than %d bytes", tooBig.Limit))
	case errors.As(err, &typeErr):
		writeError(w, http.StatusBadRequest, fmt.Errorf("invalid JSON: field %s: expected %s, got %s", typeErr.Field, typeErr.Type, typeErr.Value))
	case errors.As(err, &syntaxErr):
		writeError(w, http.StatusBadRequest, fmt.Errorf("invalid JSON at byte %d: %v", syntaxErr.Offset, err))
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, errors.New("request body is empty: a JSON object is required"))
	default:
		writeError(w, http.StatusBadRequest, fmt.Errorf("invalid JSON: %v", err))
	}
	return false
}

// boolQuery parses Docker's boolean query values (1/true/True...).
func boolQuery(r *http.Request, key string) bool {
	v := strings.ToLower(r.URL.Query().Get(key))
	return v == "1" || v == "true" || v == "yes"
}
