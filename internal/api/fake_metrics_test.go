package api

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tether-net/tether/internal/metrics"
)

// metricsFake is the fake backend with the engine's metrics collector: a
// gauge standing in for the engine's state gauges.
type metricsFake struct {
	*fakeBackend
	g prometheus.Gauge
}

func (m metricsFake) MetricsCollector() prometheus.Collector { return m.g }

func TestMetricsRoute(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_networks_fake", Help: "stand-in"})
	g.Set(3)
	for _, tc := range []struct {
		name    string
		b       Backend
		off     bool
		path    string
		status  int
		want    []string // metric families present
		wantNot []string
	}{
		{name: "engine state and process", b: metricsFake{&fakeBackend{}, g}, path: "/metrics", status: 200,
			want: []string{"tether_networks_fake", "go_goroutines"}},
		{name: "versioned path", b: metricsFake{&fakeBackend{}, g}, path: "/v1.44/metrics", status: 200,
			want: []string{"tether_networks_fake"}},
		{name: "backend without collector", b: &fakeBackend{}, path: "/metrics", status: 200,
			want: []string{"go_goroutines"}, wantNot: []string{"tether_networks_fake"}},
		{name: "off", b: metricsFake{&fakeBackend{}, g}, off: true, path: "/metrics", status: 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			metrics.SetOn(!tc.off)
			defer metrics.SetOn(true)
			w := call{method: "GET", path: tc.path}.serveWith(t, tc.b)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status != 200 {
				if !strings.Contains(w.Body.String(), metrics.EnvSwitch) {
					t.Errorf("body %q does not name %s", w.Body, metrics.EnvSwitch)
				}
				return
			}
			p := expfmt.NewTextParser(model.UTF8Validation)
			mfs, err := p.TextToMetricFamilies(w.Body)
			if err != nil {
				t.Fatalf("parse the exposition: %v", err)
			}
			for _, n := range tc.want {
				if mfs[n] == nil {
					t.Errorf("%s missing", n)
				}
			}
			for _, n := range tc.wantNot {
				if mfs[n] != nil {
					t.Errorf("%s present", n)
				}
			}
		})
	}
}

func TestMetricsRouteMethod(t *testing.T) {
	w := call{method: "POST", path: "/metrics"}.serve(t, &fakeBackend{})
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %d, want 405", w.Code)
	}
}

// serveWith is serve with any Backend.
func (c call) serveWith(t *testing.T, b Backend) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	New(b, slog.New(slog.DiscardHandler)).ServeHTTP(w, httptest.NewRequest(c.method, c.path, nil))
	return w
}
