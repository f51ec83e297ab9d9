package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/engine"
)

// The fuzz targets below send stranger-made requests to the API in process
// (httptest) over a fakeBackend. A request that passes the API's own checks
// reaches the fake, which answers as a successful engine would (the engine
// has its own validation to fuzz); one that does not must get a 4xx in
// Docker's {"message": ...} shape and leave the fake untouched. Any panic
// (other than the fake's own "no event hub" stop) or 5xx fails.

// fuzzAnswer is what one fuzzed request got.
type fuzzAnswer struct {
	status        int
	body          []byte
	reachedEngine bool
	fake          *fakeBackend
}

// fuzzServe serves one request and checks the answer's shape.
func fuzzServe(t *testing.T, method, target string, body []byte) fuzzAnswer {
	t.Helper()
	r := httptest.NewRequest(method, "/", bytes.NewReader(body))
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("test built a bad URL %q: %v", target, err)
	}
	r.URL = u
	w := httptest.NewRecorder()
	f := &fakeBackend{}
	a := fuzzAnswer{fake: f}
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("%s %s with body %q panicked: %v\n%s", method, target, body, p, debug.Stack())
			}
		}()
		newFakeServer(f).ServeHTTP(w, r)
	}()
	a.reachedEngine = f.reached()
	a.status, a.body = w.Code, w.Body.Bytes()
	if a.status >= 500 {
		t.Fatalf("%s %s with body %q: status %d (%s), want 4xx for bad input", method, target, body, a.status, a.body)
	}
	if a.status >= 400 {
		var m map[string]string
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %s: error answer with Content-Type %q", method, target, ct)
		}
		if err := json.Unmarshal(a.body, &m); err != nil || len(m) != 1 || m["message"] == "" {
			t.Fatalf("%s %s: error body %q is not {\"message\": ...}", method, target, a.body)
		}
		if mut := f.mutated(); len(mut) > 0 {
			t.Fatalf("%s %s with body %q: refused with %d but called %v", method, target, body, a.status, mut)
		}
	}
	return a
}

func addBodies(f *testing.F, bodies ...string) {
	for _, b := range bodies {
		f.Add([]byte(b))
	}
}

// FuzzCreateNetworkBody: POST /networks/create with any body.
func FuzzCreateNetworkBody(f *testing.F) {
	addBodies(f, `{"Name":"n"}`, `{"Name":"n","Driver":"bridge","IPAM":{"Driver":"default","Config":[{"Subnet":"10.1.0.0/16","IPRange":"10.1.2.0/24","Gateway":"10.1.0.254","AuxiliaryAddresses":{"a":"10.1.0.5"}}]},"Options":{"com.docker.network.bridge.name":"br0"},"Labels":{"k":"v"}}`,
		`{"Name":"o","Driver":"overlay","Scope":"global","Attachable":true}`, `{"Name":"x","EnableIPv4":false}`,
		`{"Name":"x","EnableIPv6":true}`, `{"Name":"x","Ingress":true}`, `{"Name":"x","ConfigFrom":{"Network":"y"}}`,
		`{"Name":"x","Scope":"swarm"}`, `{"Name":"x","Internal":"yes"}`, `{"Name":"x","IPAM":{"Config":[{"Subnet":5}]}}`,
		`{"Name":"x"} trailing`, `{"Name":"x"}}`, `{"Name":`, ``, `null`, `[]`, `"n"`, `{"Name":"x","Options":null,"IPAM":null}`,
		`{"Name":"\u0000"}`, `{"Name":"x","IPAM":{"Config":[{},{}]}}`, `{"name":"case-insensitive"}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		a := fuzzServe(t, "POST", "/v1.51/networks/create", body)
		if !a.reachedEngine && a.status != 400 && a.status != 413 {
			t.Fatalf("POST /networks/create %q: status %d (%s), want 400 or 413 before the engine", body, a.status, a.body)
		}
		if a.reachedEngine {
			// what the engine got decoded, and its Name is set
			var b createNetworkBody
			if err := json.Unmarshal(body, &b); err != nil || b.Name == "" || a.fake.netSpec.Name != b.Name {
				t.Fatalf("POST /networks/create %q reached the engine: decode %v, Name %q, engine got %q", body, err, b.Name, a.fake.netSpec.Name)
			}
			if a.status != 201 {
				t.Fatalf("POST /networks/create %q: the engine accepted it, status %d", body, a.status)
			}
		}
	})
}

// FuzzConnectBody: POST /networks/{id}/connect and .../disconnect with any
// network reference and body.
func FuzzConnectBody(f *testing.F) {
	for _, b := range []string{`{"Container":"c"}`, `{"Container":"c","Force":true}`,
		`{"Container":"c","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.1.0.9"},"Aliases":["a","b"]}}`,
		`{"Container":"c","EndpointConfig":{"MacAddress":"02:42:ac:11:00:02"}}`,
		`{"Container":"c","EndpointConfig":{"IPAMConfig":{"IPv6Address":"fd00::9","LinkLocalIPs":["169.254.1.1"]}}}`,
		`{"Container":"c","PortBindings":{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"8080"}],"[":[],"53/udp":null}}`,
		`{"Container":""}`, `{}`, ``, `{"Container":5}`, `{"Container":"c","PortBindings":{"80":[{"HostPort":7}]}}`} {
		f.Add("net", false, []byte(b))
		f.Add("n%2Fx", true, []byte(b))
	}
	f.Fuzz(func(t *testing.T, id string, disconnect bool, body []byte) {
		op := "connect"
		if disconnect {
			op = "disconnect"
		}
		target := "/v1.51/networks/" + url.PathEscape(id) + "/" + op
		if _, err := url.Parse(target); err != nil {
			return
		}
		a := fuzzServe(t, "POST", target, body)
		if !a.reachedEngine && a.status != 400 && a.status != 413 && a.status != 404 && a.status != 405 {
			t.Fatalf("POST %s %q: status %d (%s), want 4xx before the engine", target, body, a.status, a.body)
		}
		if a.reachedEngine && a.status != 200 {
			t.Fatalf("POST %s %q: the engine accepted it, status %d (%s)", target, body, a.status, a.body)
		}
		// Ports reach the engine parsed, and only as valid specs.
		for _, p := range a.fake.attach.Ports {
			if err := p.Validate(); err != nil {
				t.Fatalf("POST %s %q: the engine got port %+v: %v", target, body, p, err)
			}
		}
	})
}

// netViews are networks to match fuzzed list filters against (as
// TestMatchNetwork has them): a user network, a used one and a builtin.
var netViews = func() []*engine.NetworkView {
	id := strings.Repeat("ab", 32)
	user := &engine.NetworkView{Network: engine.Network{ID: id, Name: "app-front", Driver: "bridge",
		Labels: map[string]string{"env": "prod", "tier": ""}}}
	used := &engine.NetworkView{Network: user.Network, Endpoints: []engine.EndpointView{{SandboxName: "s"}}}
	builtin := &engine.NetworkView{Network: engine.Network{ID: "ffff" + id[4:], Name: "host", Driver: "host", Predefined: true}}
	return []*engine.NetworkView{user, used, builtin}
}()

// FuzzFilters: the filters query of GET /networks, POST /networks/prune and
// GET /events, over HTTP, and the list filters matched against networks
// (over HTTP the fake has no networks to match).
func FuzzFilters(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"driver":{"bridge":true}}`, `{"driver":["bridge"]}`, `{"name":{"app":true},"label":{"env=prod":true}}`,
		`{"type":{"custom":true}}`, `{"type":{"boat":true}}`, `{"dangling":{"1":true}}`, `{"dangling":{"maybe":true}}`,
		`{"until":{"10m":true}}`, `{"until":{"1h":true,"2h":true}}`, `{"until":{"1700000000.123456789":true}}`, `{"until":{"-1s":true}}`,
		`{"label!":{"env":true}}`, `{"bogus":{"x":true}}`, `{"scope":{"local":true}}`, `{"event":{"create":true},"network":{"ab":true}}`,
		`xyz`, `null`, `{"driver":null}`, `{"driver":{"bridge":false}}`, `{"driver":[1]}`, `[]`} {
		for route := range uint8(3) {
			f.Add(route, s)
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, raw string) {
		q := url.Values{"filters": {raw}}.Encode()
		switch route % 3 {
		case 0:
			a := fuzzServe(t, "GET", "/v1.51/networks?"+q, nil)
			if !a.reachedEngine && a.status != 400 {
				t.Fatalf("GET /networks?%s: status %d (%s), want 400 before the engine", q, a.status, a.body)
			}
			if fl, err := parseFilters(raw); err == nil && fl.check("dangling", "driver", "id", "label", "name", "scope", "type") == nil {
				for _, v := range netViews {
					_, _ = matchNetwork(fl, v)
				}
			}
		case 1:
			a := fuzzServe(t, "POST", "/v1.51/networks/prune?"+q, nil)
			if !a.reachedEngine && a.status != 400 {
				t.Fatalf("POST /networks/prune?%s: status %d (%s), want 400 before the engine", q, a.status, a.body)
			}
		case 2:
			a := fuzzServe(t, "GET", "/v1.51/events?until=1&"+q, nil)
			if !a.reachedEngine && a.status != 400 {
				t.Fatalf("GET /events?%s: status %d (%s), want 400 before the engine", q, a.status, a.body)
			}
		}
	})
}

// FuzzEventQuery: the since, until and filters of GET /events, parsed, and
// the parsed query applied to an event.
func FuzzEventQuery(f *testing.F) {
	for _, s := range [][3]string{{"", "", ""}, {"1799999990", "", ""}, {"1799999990.5", "1800000000", ""}, {"10m", "", ""},
		{"2027-01-15T10:00:00Z", "", ""}, {"yesterday", "", ""}, {"1.", "", ""}, {"1.1234567891", "", ""}, {"-5m", "", ""},
		{"20", "10", ""}, {"", "", `{"type":{"network":true}}`}, {"", "", `{"type":["network"]}`}, {"", "", `{"label":{"name=a":true}}`},
		{"9223372036854775807", "", ""}, {"-9223372036854775808.999999999", "", ""}, {"2562047h", "", ""}, {"", "", `{"scope":{"galaxy":true}}`}} {
		f.Add(s[0], s[1], s[2])
	}
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, since, until, filters string) {
		q := url.Values{"since": {since}, "until": {until}, "filters": {filters}}.Encode()
		eq, err := parseEventQuery(httptest.NewRequest("GET", "/events?"+q, nil), now)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("empty error for %q", q)
			}
			return
		}
		if !eq.since.IsZero() && !eq.until.IsZero() && eq.until.Before(eq.since) {
			t.Fatalf("%q: until %v before since %v accepted", q, eq.until, eq.since)
		}
		e := engine.Event{Type: "network", Action: "create", ID: strings.Repeat("ab", 32), Time: now,
			Attrs: map[string]string{"name": "a", "type": "bridge"}}
		_ = eq.inRange(e.Time)
		_ = eq.match(eventMessage(e))
		_ = fmt.Sprint(eq.since, eq.until)
	})
}
