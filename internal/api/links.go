package api

import (
	"errors"
	"net/http"

	"github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/engine"
)

// Point-to-point links (docs/links.md): Tether's own routes, nothing in
// Docker's API has them.

func (s *Server) linkRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /tether/v1/links", s.listLinks)
	m.HandleFunc("POST /tether/v1/links", s.createLink)
	m.HandleFunc("GET /tether/v1/links/{id}", s.inspectLink)
	m.HandleFunc("DELETE /tether/v1/links/{id}", s.removeLink)
}

func (s *Server) createLink(w http.ResponseWriter, r *http.Request) {
	var b types.LinkCreateRequest
	if !decode(w, r, &b) {
		return
	}
	if b.A == "" || b.B == "" {
		writeError(w, http.StatusBadRequest, errors.New("invalid A/B: a link joins two sandboxes, name both"))
		return
	}
	l, err := s.eng.CreateLink(r.Context(), engine.LinkSpec{Name: b.Name, A: b.A, B: b.B, IP: b.IP, PeerIP: b.PeerIP,
		MTU: b.MTU, DNSName: b.DNSName})
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.linkView(l))
}

func (s *Server) listLinks(w http.ResponseWriter, _ *http.Request) {
	out := []types.Link{}
	for _, l := range s.eng.Links() {
		out = append(out, s.linkView(l))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) inspectLink(w http.ResponseWriter, r *http.Request) {
	l, err := s.eng.Link(r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.linkView(l))
}

func (s *Server) removeLink(w http.ResponseWriter, r *http.Request) {
	if err := s.eng.RemoveLink(r.Context(), r.PathValue("id")); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) linkView(l *engine.Link) types.Link {
	end := func(id, ifName string) types.LinkEnd {
		e := types.LinkEnd{SandboxID: id, IfName: ifName}
		if sb, err := s.eng.Sandbox(id); err == nil {
			e.SandboxName = sb.Name
		}
		return e
	}
	a, b := end(l.A, l.IfA), end(l.B, l.IfB)
	a.Address, b.Address = l.AddrA, l.AddrB
	return types.Link{ID: l.ID, Name: l.Name, Created: l.Created, A: a, B: b, MTU: l.MTU, DNSName: l.DNSName}
}
