package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/doctor/report"
	"github.com/tether-net/tether/internal/engine"
)

// The engine is a Doctorer.
var _ Doctorer = (*engine.Engine)(nil)

// doctorBackend is the fake backend with a doctor: it records the pair it
// was asked about and answers a canned report, or err.
type doctorBackend struct {
	*fakeBackend
	asked [][2]string
	rep   *report.Report
	err   error
}

func (d *doctorBackend) Doctor(_ context.Context, a, b string) (*report.Report, error) {
	d.asked = append(d.asked, [2]string{a, b})
	return d.rep, d.err
}

func TestDoctorRoute(t *testing.T) {
	broken := &report.Report{Broken: true, Findings: []report.Finding{{Check: "ip_forward", Severity: report.Error, What: "IPv4 forwarding is off"}}}
	notFound := &engine.Error{Kind: engine.KindNotFound, Err: errString("doctor: no such sandbox: ghost")}
	tests := []struct {
		name      string
		query     string
		err       error
		status    int
		wantAsked bool
		pair      [2]string
		body      string // in the body
	}{
		{name: "host", query: "", status: 200, wantAsked: true, body: `"broken":true`},
		{name: "pair", query: "?a=web&b=db", status: 200, wantAsked: true, pair: [2]string{"web", "db"}, body: "IPv4 forwarding is off"},
		{name: "only a", query: "?a=web", status: 400, body: `missing query parameter \"b\"`},
		{name: "only b", query: "?b=db", status: 400, body: `missing query parameter \"a\"`},
		{name: "empty a", query: "?a=&b=db", status: 400, body: `invalid query parameter \"a\"`},
		{name: "unknown parameter", query: "?a=web&b=db&c=x", status: 400, body: `invalid query parameter \"c\"`},
		{name: "a twice", query: "?a=web&a=x&b=db", status: 400, body: `invalid query parameter \"a\": given 2 times`},
		{name: "unknown sandbox", query: "?a=web&b=ghost", err: notFound, status: 404, wantAsked: true, pair: [2]string{"web", "ghost"}, body: "no such sandbox: ghost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &doctorBackend{fakeBackend: &fakeBackend{}, rep: broken, err: tt.err}
			w := httptest.NewRecorder()
			s := New(f, slog.New(slog.DiscardHandler))
			s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1.51/tether/v1/doctor"+tt.query, nil))
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if !strings.Contains(w.Body.String(), tt.body) {
				t.Errorf("body %s lacks %s", w.Body, tt.body)
			}
			if (len(f.asked) > 0) != tt.wantAsked {
				t.Fatalf("asked %v, want asked %v", f.asked, tt.wantAsked)
			}
			if tt.wantAsked && f.asked[0] != tt.pair {
				t.Errorf("asked about %v, want %v", f.asked[0], tt.pair)
			}
			if tt.status == 200 {
				var rep report.Report
				if err := json.Unmarshal(w.Body.Bytes(), &rep); err != nil || !rep.Broken {
					t.Errorf("decode report: %v, %+v", err, rep)
				}
			}
		})
	}
}

// A backend without a doctor answers 501 naming what is missing.
func TestDoctorNotImplemented(t *testing.T) {
	w := httptest.NewRecorder()
	newFakeServer(&fakeBackend{}).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/tether/v1/doctor", nil))
	if w.Code != http.StatusNotImplemented || !strings.Contains(w.Body.String(), "Doctor") {
		t.Fatalf("got %d %s, want 501 naming Doctor", w.Code, w.Body)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
