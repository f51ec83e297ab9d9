package api

import (
	"net/http"
	"strings"
	"testing"
)

// A state-changing request a browser sends on another site's behalf is
// refused before it reaches the backend; reads, and requests from clients
// that send no such headers, go through.
func TestCrossSiteRefused(t *testing.T) {
	create := `{"Name":"n"}`
	for _, tc := range []struct {
		name    string
		method  string
		path    string
		header  http.Header
		refused bool
	}{
		{"docker CLI (no browser headers)", "POST", "/networks/create", nil, false},
		{"same origin page", "POST", "/networks/create", http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {"http://example.com"}}, false},
		{"typed in the address bar", "POST", "/networks/create", http.Header{"Sec-Fetch-Site": {"none"}}, false},
		{"another site", "POST", "/networks/create", http.Header{"Sec-Fetch-Site": {"cross-site"}}, true},
		{"a sibling site", "POST", "/networks/create", http.Header{"Sec-Fetch-Site": {"same-site"}}, true},
		{"foreign Origin only", "POST", "/networks/create", http.Header{"Origin": {"https://evil.test"}}, true},
		{"opaque Origin", "DELETE", "/networks/n", http.Header{"Origin": {"null"}}, true},
		{"exec from another site", "POST", "/tether/v1/sandboxes/s/exec", http.Header{"Sec-Fetch-Site": {"cross-site"}}, true},
		{"read from another site", "GET", "/networks", http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"https://evil.test"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeBackend{}
			body := ""
			if tc.method == "POST" {
				body = create
				if strings.HasSuffix(tc.path, "/exec") {
					body = `{"Cmd":["true"],"Detach":true}`
				}
			}
			w := call{method: tc.method, path: tc.path, body: body, header: tc.header}.serve(t, f)
			if tc.refused {
				if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "cross-site request refused") {
					t.Fatalf("%d %s, want 403 naming the cross-site request", w.Code, w.Body)
				}
				if f.reached() {
					t.Error("a refused request reached the backend")
				}
				return
			}
			if w.Code == http.StatusForbidden {
				t.Fatalf("refused: %d %s", w.Code, w.Body)
			}
		})
	}
}
