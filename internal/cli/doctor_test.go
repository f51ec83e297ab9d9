package cli

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/doctor/report"
)

var brokenReport = &report.Report{
	Broken: true,
	Checks: []report.Check{{Name: "ip_forward", Severity: report.Error}, {Name: "cluster_store", Severity: report.Skipped, Detail: "no cluster store configured"}},
	Findings: []report.Finding{{Check: "ip_forward", Severity: report.Error, What: "IPv4 forwarding is off",
		Why: "the host routes nothing", Fix: "sysctl -w net.ipv4.ip_forward=1"}},
	Pair: &report.Pair{A: "web", B: "db", Path: report.PathRouted, BreaksAt: "net.ipv4.ip_forward", Hops: []report.Hop{
		{Step: "web's interface", OK: true}, {Step: "net.ipv4.ip_forward", Detail: "off"}, {Step: "db's interface", OK: true}}},
}

func TestPrintDoctor(t *testing.T) {
	tests := []struct {
		name, format string
		rep          *report.Report
		want         []string
	}{
		{"table", "", brokenReport, []string{"CHECK", "ip_forward", "skipped", "no cluster store configured",
			"[error] ip_forward: IPv4 forwarding is off", "  why: the host routes nothing", "  fix: sysctl -w net.ipv4.ip_forward=1",
			"Path web -> db: routed between bridges", "  ok   web's interface", "  FAIL net.ipv4.ip_forward: off", "  --   db's interface",
			"Breaks at: net.ipv4.ip_forward", "BROKEN: 1 error(s), 0 warning(s)"}},
		{"healthy", "", &report.Report{Checks: []report.Check{{Name: "ip_forward", Severity: report.OK}}}, []string{"nothing broken: 0 warning(s)"}},
		{"json", "json", brokenReport, []string{`"broken": true`, `"breaksAt": "net.ipv4.ip_forward"`}},
		{"template", "{{.broken}} {{len .findings}}", brokenReport, []string{"true 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := printDoctor(&b, tt.format, tt.rep); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}

// The exit status: 0 healthy, 1 broken, 2 when the doctor could not run.
func TestDoctorExit(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.URL.RawQuery)
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Query().Get("b") {
		case "ghost":
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]string{"message": "doctor: no such sandbox: ghost"})
		case "db":
			json.NewEncoder(w).Encode(brokenReport)
		default:
			json.NewEncoder(w).Encode(report.Report{})
		}
	})}
	go srv.Serve(l)
	defer srv.Close()
	tests := []struct {
		args  []string
		code  int
		query string // "-" not asked
	}{
		{[]string{"doctor"}, 0, ""},
		{[]string{"doctor", "web", "db"}, 1, "a=web&b=db"},
		{[]string{"doctor", "web", "ghost"}, 2, "a=web&b=ghost"},
		{[]string{"doctor", "web"}, 2, "-"},
	}
	for _, tt := range tests {
		asked = nil
		if got := Execute(append([]string{"-H", "unix://" + sock}, tt.args...), "test"); got != tt.code {
			t.Errorf("%v: exit %d, want %d", tt.args, got, tt.code)
		}
		if tt.query == "-" && len(asked) != 0 || tt.query != "-" && (len(asked) != 1 || asked[0] != tt.query) {
			t.Errorf("%v: asked %q, want %q", tt.args, asked, tt.query)
		}
	}
}
