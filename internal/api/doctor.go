package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/tether-net/tether/internal/doctor/report"
)

// Doctorer is what the doctor route needs beyond Backend; *engine.Engine
// implements it (internal/engine/doctor.go).
type Doctorer interface {
	// Doctor runs the host checks, and traces the path from sandbox a to
	// sandbox b when both are given.
	Doctor(ctx context.Context, a, b string) (*report.Report, error)
}

// doctorRoutes serves the doctor's checks (tether doctor):
//
//	GET /tether/v1/doctor           the whole host
//	GET /tether/v1/doctor?a=A&b=B   the host and the path from A to B
//
// The answer is a report.Report, 200 whether or not something is broken
// (its "broken" says); 404 names an unknown sandbox, 400 a bad query.
func (s *Server) doctorRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /tether/v1/doctor", s.doctor)
}

func (s *Server) doctor(w http.ResponseWriter, r *http.Request) {
	d, ok := s.eng.(Doctorer)
	if !ok {
		writeError(w, http.StatusNotImplemented, errors.New("this backend has no doctor (Doctor)"))
		return
	}
	a, b, err := pairQuery(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	rep, err := d.Doctor(r.Context(), a, b)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// pairQuery reads ?a=&b=: both or neither, once each, nothing else.
func pairQuery(r *http.Request) (a, b string, err error) {
	q := r.URL.Query()
	for k, v := range q {
		if k != "a" && k != "b" {
			return "", "", fmt.Errorf("invalid query parameter %q: the doctor takes only a and b (two sandboxes)", k)
		}
		if len(v) != 1 {
			return "", "", fmt.Errorf("invalid query parameter %q: given %d times", k, len(v))
		}
	}
	a, b = q.Get("a"), q.Get("b")
	switch {
	case q.Has("a") && a == "":
		return "", "", errors.New("invalid query parameter \"a\": empty sandbox name")
	case q.Has("b") && b == "":
		return "", "", errors.New("invalid query parameter \"b\": empty sandbox name")
	case a != "" && b == "":
		return "", "", errors.New("missing query parameter \"b\": a pair needs two sandboxes (a and b)")
	case b != "" && a == "":
		return "", "", errors.New("missing query parameter \"a\": a pair needs two sandboxes (a and b)")
	}
	return a, b, nil
}
