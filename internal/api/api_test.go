package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/engine"
)

// newTestServer serves the API over a fake backend with nothing in it.
func newTestServer() *Server { return newFakeServer(&fakeBackend{}) }

func serve(t *testing.T, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	return serveFake(t, &fakeBackend{}, method, path, body)
}

// serveFake serves one request over f.
func serveFake(t *testing.T, f *fakeBackend, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	var r *http.Request
	if body == "" {
		r = httptest.NewRequest(method, path, nil)
	} else {
		r = httptest.NewRequest(method, path, strings.NewReader(body))
	}
	w := httptest.NewRecorder()
	newFakeServer(f).ServeHTTP(w, r)
	return w
}

// errMessage checks an error answer's shape and returns its message.
func errMessage(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want exactly application/json", ct)
	}
	var m map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatalf("error body %q: %v", w.Body.String(), err)
	}
	if len(m) != 1 || m["message"] == "" {
		t.Errorf("error body = %q, want only a non-empty message", w.Body.String())
	}
	return m["message"]
}

func checkIdentity(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	h := w.Header()
	if got := h.Get("Api-Version"); got != APIVersion {
		t.Errorf("Api-Version = %q, want %q", got, APIVersion)
	}
	if got := h.Get("Ostype"); got != runtime.GOOS {
		t.Errorf("Ostype = %q, want %q", got, runtime.GOOS)
	}
	if got := h.Get("Server"); !strings.HasPrefix(got, "Tether/") {
		t.Errorf("Server = %q, want Tether/...", got)
	}
}

func TestVersionNegotiation(t *testing.T) {
	tests := []struct {
		method, path string
		status       int
		body         string // exact body for 200; substring of the message otherwise
	}{
		{"HEAD", "/_ping", 200, ""},
		{"GET", "/_ping", 200, "OK"},
		{"HEAD", "/v1.51/_ping", 200, ""},
		{"GET", "/v1.24/_ping", 200, "OK"},
		{"GET", "/v1.51/_ping", 200, "OK"},
		{"GET", "/v1.52/_ping", 400, "client version 1.52 is too new. Maximum supported API version is 1.51"},
		{"GET", "/v2.0/_ping", 400, "client version 2.0 is too new"},
		{"GET", "/v1.23/_ping", 400, "client version 1.23 is too old. Minimum supported API version is 1.24"},
		{"GET", "/v1.5/_ping", 400, "client version 1.5 is too old"},
		{"GET", "/nope", 404, "page not found"},
		{"GET", "/v1.51/nope", 404, "page not found"},
		{"POST", "/networks/abc/frobnicate", 404, "page not found"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			w := serve(t, tt.method, tt.path, "")
			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d (body %q)", w.Code, tt.status, w.Body.String())
			}
			checkIdentity(t, w)
			if tt.status != 200 {
				if msg := errMessage(t, w); !strings.Contains(msg, tt.body) {
					t.Errorf("message = %q, want it to contain %q", msg, tt.body)
				}
				return
			}
			if got := w.Body.String(); got != tt.body {
				t.Errorf("body = %q, want %q", got, tt.body)
			}
			if w.Header().Get("Swarm") == "" || w.Header().Get("Docker-Experimental") == "" {
				t.Errorf("ping lacks Swarm or Docker-Experimental: %v", w.Header())
			}
		})
	}
}

// The unknown-path answer is byte for byte what the docker CLI expects.
func TestNotFoundBody(t *testing.T) {
	w := serve(t, "GET", "/containers/json/x/y", "")
	if w.Code != 404 || strings.TrimSpace(w.Body.String()) != `{"message":"page not found"}` {
		t.Errorf("got %d %q", w.Code, w.Body.String())
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
}

// decode is exercised through POST /networks/create: its errors answer
// before the engine is used.
func TestDecode(t *testing.T) {
	big := `{"Name":"x","Labels":{"k":"` + strings.Repeat("a", maxBody) + `"}}`
	tests := []struct {
		name   string
		body   string
		status int
		want   []string
	}{
		{"not JSON", "nonsense", 400, []string{"invalid JSON", "byte"}},
		{"not an object", `"name"`, 400, []string{"invalid JSON", "string"}},
		{"truncated", `{"Name":`, 400, []string{"invalid JSON"}},
		{"too big", big, 413, []string{"larger than 1048576 bytes"}},
		{"wrong type", `{"Name":"x","Internal":"yes"}`, 400, []string{"field Internal", "bool", "string"}},
		{"wrong nested type", `{"Name":"x","IPAM":{"Config":[{"Subnet":5}]}}`, 400, []string{"IPAM.Config.Subnet", "number"}},
		{"empty", "", 400, []string{"empty"}},
		{"blank", "  \n", 400, []string{"empty"}},
		{"trailing garbage", `{"Name":"x"} xyz`, 400, []string{"after the JSON object"}},
		{"second object", `{"Name":"x"}{"Name":"y"}`, 400, []string{"after the JSON object"}},
		{"trailing brace", `{"Name":"x"}}`, 400, []string{"after the JSON object"}},
		{"trailing bracket", `{"Name":"x"}]`, 400, []string{"after the JSON object"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := serve(t, "POST", "/networks/create", tt.body)
			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d (body %.200q)", w.Code, tt.status, w.Body.String())
			}
			msg := errMessage(t, w)
			for _, s := range tt.want {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q lacks %q", msg, s)
				}
			}
		})
	}
}

// A valid body followed by whitespace decodes; the handler then goes on
// (here: to the spec check, which needs no engine).
func TestDecodeAcceptsTrailingSpace(t *testing.T) {
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/", strings.NewReader("{\"Name\":\"x\",\"Internal\":true}\n\t "))
	var b createNetworkBody
	if !decode(w, r, &b) {
		t.Fatalf("decode refused: %d %s", w.Code, w.Body.String())
	}
	if b.Name != "x" || !b.Internal {
		t.Errorf("decoded %+v", b)
	}
}

func boolp(b bool) *bool { return &b }

func TestCreateNetworkBodyErrors(t *testing.T) {
	tests := []struct {
		name string
		body createNetworkBody
		want string
	}{
		{"missing name", createNetworkBody{}, "Name"},
		{"ingress", createNetworkBody{Name: "n", Ingress: true}, "Ingress"},
		{"config only", createNetworkBody{Name: "n", ConfigOnly: true}, "ConfigOnly"},
		{"config from", createNetworkBody{Name: "n", ConfigFrom: &struct{ Network string }{"other"}}, "ConfigFrom"},
		{"swarm scope", createNetworkBody{Name: "n", Scope: "swarm"}, "Scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.body.spec()
			if err == nil {
				t.Fatal("spec() accepted it")
			}
			if !strings.HasPrefix(err.Error(), "invalid ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %s", err, tt.want)
			}
			// Through the handler the same error is a 400.
			raw, _ := json.Marshal(tt.body)
			w := serve(t, "POST", "/networks/create", string(raw))
			if w.Code != 400 {
				t.Fatalf("status = %d, want 400 (%s)", w.Code, w.Body.String())
			}
			if msg := errMessage(t, w); !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not name %s", msg, tt.want)
			}
		})
	}
}

func TestCreateNetworkBodySpec(t *testing.T) {
	tests := []struct {
		name string
		body string
		want engine.NetworkSpec
	}{{
		// What `docker network create --subnet 10.1.0.0/16 --ip-range 10.1.2.0/24
		// --gateway 10.1.0.254 --aux-address r=10.1.0.9 -o ...mtu=1400
		// --label team=net --internal --attachable app` sends.
		name: "docker CLI",
		body: `{"Name":"app","Driver":"bridge","Scope":"","EnableIPv4":null,"EnableIPv6":null,
			"IPAM":{"Driver":"default","Options":{"x":"y"},"Config":[{"Subnet":"10.1.0.0/16","IPRange":"10.1.2.0/24",
			"Gateway":"10.1.0.254","AuxiliaryAddresses":{"r":"10.1.0.9"}}]},
			"Internal":true,"Attachable":true,"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,
			"Options":{"com.docker.network.driver.mtu":"1400"},"Labels":{"team":"net"}}`,
		want: engine.NetworkSpec{
			Name: "app", Driver: "bridge", Internal: true, Attachable: true,
			IPAMDriver: "default", IPAMOptions: map[string]string{"x": "y"},
			Subnets: []engine.SubnetSpec{{Subnet: "10.1.0.0/16", IPRange: "10.1.2.0/24", Gateway: "10.1.0.254",
				Aux: map[string]string{"r": "10.1.0.9"}}},
			Options: map[string]string{"com.docker.network.driver.mtu": "1400"},
			Labels:  map[string]string{"team": "net"},
		},
	}, {
		name: "CLI without subnet",
		body: `{"Name":"plain","Driver":"bridge","Scope":"local","EnableIPv4":true,"EnableIPv6":false,
			"IPAM":{"Driver":"default","Options":{},"Config":[]},"Options":{},"Labels":{}}`,
		want: engine.NetworkSpec{Name: "plain", Driver: "bridge", Scope: "local", IPAMDriver: "default", IPAMOptions: map[string]string{},
			Options: map[string]string{}, Labels: map[string]string{}, EnableIPv4: boolp(true)},
	}, {
		name: "minimal",
		body: `{"Name":"m"}`,
		want: engine.NetworkSpec{Name: "m"},
	}, {
		name: "ipv6 asked",
		body: `{"Name":"six","EnableIPv6":true}`,
		want: engine.NetworkSpec{Name: "six", EnableIPv6: true},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b createNetworkBody
			if err := json.Unmarshal([]byte(tt.body), &b); err != nil {
				t.Fatal(err)
			}
			got, err := b.spec()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("spec =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseFilters(t *testing.T) {
	tests := []struct {
		raw     string
		want    filters
		wantErr bool
	}{
		{"", filters{}, false},
		{`{}`, filters{}, false},
		{`{"driver":{"bridge":true},"label":{"a=b":true,"c":true}}`,
			filters{"driver": {"bridge": true}, "label": {"a=b": true, "c": true}}, false},
		{`{"driver":["bridge","host"]}`, filters{"driver": {"bridge": true, "host": true}}, false},
		{`xyz`, nil, true},
		{`{"driver":"bridge"}`, nil, true},
		{`["driver"]`, nil, true},
		{`{"driver":{"bridge":"yes"}}`, nil, true},
		{`{"driver":{"bridge":true}`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := parseFilters(tt.raw)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("accepted: %v", got)
				}
				if !strings.Contains(err.Error(), "filters") {
					t.Errorf("error %q does not name the filters", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// Bad filters on list and prune answer 400 before the engine is used.
func TestFilterErrorsOverHTTP(t *testing.T) {
	tests := []struct {
		method, path, want string
	}{
		{"GET", "/networks?filters=xyz", "invalid filters"},
		{"GET", "/networks?filters=" + `{"bogus":{"x":true}}`, "invalid filter 'bogus'"},
		{"GET", "/v1.51/networks?filters=" + `{"until":{"1h":true}}`, "invalid filter 'until'"},
		{"POST", "/networks/prune?filters=xyz", "invalid filters"},
		{"POST", "/networks/prune?filters=" + `{"driver":{"bridge":true}}`, "invalid filter 'driver'"},
		{"POST", "/networks/prune?filters=" + `{"until":{"yesterday":true}}`, "until=yesterday"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "/", nil)
			path, query, _ := strings.Cut(tt.path, "?")
			r.URL.Path = path
			r.URL.RawQuery = strings.ReplaceAll(query, `"`, "%22")
			w := httptest.NewRecorder()
			newTestServer().ServeHTTP(w, r)
			if w.Code != 400 {
				t.Fatalf("status = %d, want 400 (%s)", w.Code, w.Body.String())
			}
			if msg := errMessage(t, w); !strings.Contains(msg, tt.want) {
				t.Errorf("message %q lacks %q", msg, tt.want)
			}
		})
	}
}

func TestFilterCheck(t *testing.T) {
	f := filters{"driver": {"bridge": true}, "nope": {"x": true}}
	if err := f.check("driver", "name"); err == nil || !strings.Contains(err.Error(), "'nope'") {
		t.Errorf("check = %v, want an error naming nope", err)
	}
	if err := f.check("driver", "nope"); err != nil {
		t.Errorf("check = %v", err)
	}
}

func TestFilterLabels(t *testing.T) {
	labels := map[string]string{"team": "net", "env": ""}
	tests := []struct {
		want     []string
		match    bool // label
		notMatch bool // label! with the same values
	}{
		{nil, true, true},
		{[]string{"team"}, true, false},
		{[]string{"team=net"}, true, false},
		{[]string{"team=web"}, false, true},
		{[]string{"team="}, false, true},
		{[]string{"env="}, true, false},
		{[]string{"env"}, true, false},
		{[]string{"owner"}, false, true},
		{[]string{"team", "env"}, true, false},
		{[]string{"team=net", "owner"}, false, false},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.want, ","), func(t *testing.T) {
			f := filters{"label": {}, "label!": {}}
			for _, w := range tt.want {
				f["label"][w] = true
				f["label!"][w] = true
			}
			if got := f.labels("label", labels); got != tt.match {
				t.Errorf("labels = %v, want %v", got, tt.match)
			}
			if got := f.notLabels(labels); got != tt.notMatch {
				t.Errorf("notLabels = %v, want %v", got, tt.notMatch)
			}
		})
	}
}

func TestFilterUntil(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		value   string
		want    time.Time
		wantErr bool
	}{
		{"", time.Time{}, false}, // no until filter at all
		{"10m", now.Add(-10 * time.Minute), false},
		{"1h30m", now.Add(-90 * time.Minute), false},
		{"1700000000", time.Unix(1700000000, 0), false},
		{"1700000000.5", time.Unix(1700000000, 5e8), false},
		{"2024-01-02T15:04:05Z", time.Date(2024, 1, 2, 15, 4, 5, 0, time.UTC), false},
		{"2024-01-02T15:04:05.123+02:00", time.Date(2024, 1, 2, 13, 4, 5, 123e6, time.UTC), false},
		{"yesterday", time.Time{}, true},
		{"10 minutes", time.Time{}, true},
		{"2024-13-45T00:00:00Z", time.Time{}, true},
		{"0", time.Unix(0, 0), false}, // a timestamp, not a zero duration
		{"-1h", time.Time{}, true},    // would point into the future
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			f := filters{}
			if tt.value != "" {
				f["until"] = map[string]bool{tt.value: true}
			}
			got, err := f.until(now)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "until="+tt.value) {
					t.Errorf("until(%q) = %v, %v; want an error naming it", tt.value, got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("until(%q) = %v, want %v", tt.value, got, tt.want)
			}
		})
	}
}

func TestFilterUntilOnce(t *testing.T) {
	f := filters{"until": {"1h": true, "2h": true}}
	if _, err := f.until(time.Now()); err == nil {
		t.Error("two until values were accepted")
	}
}

func TestMatchNetwork(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	user := &engine.NetworkView{Network: engine.Network{ID: id, Name: "app-front", Driver: "bridge",
		Labels: map[string]string{"team": "net"}}}
	used := &engine.NetworkView{Network: user.Network, Endpoints: []engine.EndpointView{{SandboxName: "s"}}}
	builtin := &engine.NetworkView{Network: engine.Network{ID: "ffff" + id[4:], Name: "host", Driver: "host", Predefined: true}}
	tests := []struct {
		name    string
		f       filters
		v       *engine.NetworkView
		want    bool
		wantErr string
	}{
		{"no filters", filters{}, user, true, ""},
		{"driver", filters{"driver": {"bridge": true}}, user, true, ""},
		{"driver other", filters{"driver": {"host": true}}, user, false, ""},
		{"driver any of", filters{"driver": {"host": true, "bridge": true}}, user, true, ""},
		{"name substring", filters{"name": {"front": true}}, user, true, ""},
		{"name miss", filters{"name": {"back": true}}, user, false, ""},
		{"id prefix", filters{"id": {"0123": true}}, user, true, ""},
		{"id not prefix", filters{"id": {"4567": true}}, user, false, ""},
		{"scope local", filters{"scope": {"local": true}}, user, true, ""},
		{"scope swarm", filters{"scope": {"swarm": true}}, user, false, ""},
		{"type custom", filters{"type": {"custom": true}}, user, true, ""},
		{"type custom builtin net", filters{"type": {"custom": true}}, builtin, false, ""},
		{"type builtin", filters{"type": {"builtin": true}}, builtin, true, ""},
		{"type builtin user net", filters{"type": {"builtin": true}}, user, false, ""},
		{"type invalid", filters{"type": {"weird": true}}, user, false, "type=weird"},
		{"dangling true unused", filters{"dangling": {"true": true}}, user, true, ""},
		{"dangling 1 used", filters{"dangling": {"1": true}}, used, false, ""},
		{"dangling true builtin", filters{"dangling": {"true": true}}, builtin, false, ""},
		{"dangling false used", filters{"dangling": {"false": true}}, used, true, ""},
		{"dangling 0 builtin", filters{"dangling": {"0": true}}, builtin, true, ""},
		{"dangling false unused", filters{"dangling": {"false": true}}, user, false, ""},
		{"dangling invalid", filters{"dangling": {"maybe": true}}, user, false, "dangling=maybe"},
		{"label key", filters{"label": {"team": true}}, user, true, ""},
		{"label key=value", filters{"label": {"team=net": true}}, user, true, ""},
		{"label other value", filters{"label": {"team=web": true}}, user, false, ""},
		{"label missing", filters{"label": {"owner": true}}, builtin, false, ""},
		{"all together", filters{"driver": {"bridge": true}, "name": {"app": true}, "type": {"custom": true},
			"label": {"team=net": true}, "dangling": {"true": true}}, user, true, ""},
		// An invalid value is an error whatever the other filters say.
		{"type invalid other miss", filters{"type": {"weird": true}, "driver": {"host": true}}, user, false, "type=weird"},
		{"dangling invalid other miss", filters{"dangling": {"maybe": true}, "name": {"zzz": true}}, user, false, "dangling=maybe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := matchNetwork(tt.f, tt.v)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("matchNetwork = %v, %v; want an error naming %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("matchNetwork = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCmpVersion(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.24", "1.24", 0}, {"1.5", "1.24", -1}, {"1.51", "1.9", 1}, {"2.0", "1.51", 1}, {"1.23", "1.24", -1},
	}
	for _, tt := range tests {
		if got := cmpVersion(tt.a, tt.b); got != tt.want {
			t.Errorf("cmpVersion(%s, %s) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// A known path under the wrong method answers 405 with Allow, as JSON.
func TestMethodNotAllowed(t *testing.T) {
	for _, tt := range []struct{ method, path, allow string }{
		{"DELETE", "/_ping", "GET, HEAD"},
		{"PUT", "/v1.44/networks/create", "DELETE, GET, HEAD, POST"}, // also matches /networks/{id}
		{"POST", "/events", "GET, HEAD"},
	} {
		w := serve(t, tt.method, tt.path, "")
		if w.Code != 405 || w.Header().Get("Allow") != tt.allow || !strings.Contains(w.Body.String(), `"message"`) ||
			!strings.Contains(w.Body.String(), tt.method) {
			t.Errorf("%s %s: %d allow=%q %q", tt.method, tt.path, w.Code, w.Header().Get("Allow"), w.Body.String())
		}
	}
}
