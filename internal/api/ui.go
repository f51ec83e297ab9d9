package api

import "net/http"

// uiRoutes serves the topology graph and its page (GET /tether/v1/ui).
func (s *Server) uiRoutes(m *http.ServeMux) {}
