package daemon

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestWithDebug(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot) // stands for the API's router
	})
	tests := []struct {
		name string
		on   bool
		path string
		want int
	}{
		{"off: pprof goes to the API", false, "/debug/pprof/", http.StatusTeapot},
		{"off: vars go to the API", false, "/debug/vars", http.StatusTeapot},
		{"on: pprof index", true, "/debug/pprof/", http.StatusOK},
		{"on: goroutine profile", true, "/debug/pprof/goroutine?debug=1", http.StatusOK},
		{"on: expvar memstats", true, "/debug/vars", http.StatusOK},
		{"on: API still served", true, "/networks", http.StatusTeapot},
		{"on: unknown debug path", true, "/debug/nothing", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			withDebug(api, tt.on).ServeHTTP(rec, httptest.NewRequest("GET", tt.path, nil))
			if rec.Code != tt.want {
				t.Fatalf("GET %s: status %d, want %d", tt.path, rec.Code, tt.want)
			}
		})
	}
}
