package daemon

import (
	"expvar"
	"net/http"
	"net/http/pprof"
	"strings"
)

// withDebug serves Go's profiling endpoints beside the API when the daemon
// runs with "debug": true, at the paths dockerd uses on its own socket:
// /debug/pprof/... (CPU, heap, goroutine and the other runtime profiles)
// and /debug/vars (expvar, with the runtime's memstats). They are behind the
// same listeners and authentication as the API; with debug off they do not
// exist (404 from the API's router), so a production daemon exposes no
// profiler.
func withDebug(api http.Handler, on bool) http.Handler {
	if !on {
		return api
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/debug/vars", expvar.Handler())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/debug/") {
			mux.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}
