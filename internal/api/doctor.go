package api

import "net/http"

// doctorRoutes serves the doctor's checks (tether doctor).
func (s *Server) doctorRoutes(m *http.ServeMux) {}
