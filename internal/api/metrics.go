package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-net/tether/internal/metrics"
)

// metricsBackend is what a backend offers for GET /metrics beyond Backend:
// the collector of its state gauges (networks, endpoints, address use,
// ports, peers), read at scrape time. *engine.Engine has it (metrics.go).
type metricsBackend interface {
	MetricsCollector() prometheus.Collector
}

// metricsRoutes serves GET /metrics (Prometheus exposition).
func (s *Server) metricsRoutes(m *http.ServeMux) {
	m.Handle("GET /metrics", MetricsHandler(s.eng))
}

// MetricsHandler serves the Prometheus exposition of the process's metrics
// and, when b is a metricsBackend, of b's state: the API's GET /metrics and
// the daemon's metrics-addr listener. With metrics off (TETHER_METRICS=0)
// it answers 404 saying so.
func MetricsHandler(b Backend) http.Handler {
	var extra []prometheus.Collector
	if mb, ok := b.(metricsBackend); ok {
		extra = append(extra, mb.MetricsCollector())
	}
	g, gerr := metrics.Gatherer(extra...)
	var h http.Handler
	if gerr == nil {
		h = metrics.Handler(g)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case !metrics.On():
			writeError(w, http.StatusNotFound, errors.New("metrics are off in this daemon ("+metrics.EnvSwitch+"=0 in its environment)"))
		case gerr != nil:
			writeError(w, http.StatusInternalServerError, fmt.Errorf("metrics: %w", gerr))
		default:
			h.ServeHTTP(w, r)
		}
	})
}
