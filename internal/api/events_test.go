package api

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"

	"github.com/tether-net/tether/internal/engine"
)

func TestParseEventQuery(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tests := []struct {
		query        string
		since, until time.Time
		err          string // substring; "" = valid
	}{
		{"", time.Time{}, time.Time{}, ""},
		{"since=1799999990", time.Unix(1_799_999_990, 0), time.Time{}, ""},
		{"since=1799999990.5&until=1800000000", time.Unix(1_799_999_990, 500_000_000), now, ""},
		{"since=10m", now.Add(-10 * time.Minute), time.Time{}, ""},
		{"since=2027-01-15T10:00:00Z", time.Date(2027, 1, 15, 10, 0, 0, 0, time.UTC), time.Time{}, ""},
		{"since=yesterday", time.Time{}, time.Time{}, "since"},
		{"since=1.", time.Time{}, time.Time{}, "since"},
		{"since=1.1234567891", time.Time{}, time.Time{}, "since"},
		{"since=-5m", time.Time{}, time.Time{}, "since"},
		{"since=20&until=10", time.Time{}, time.Time{}, "before since"},
		{"filters=" + url.QueryEscape(`{"type":{"network":true}}`), time.Time{}, time.Time{}, ""},
		{"filters=" + url.QueryEscape(`{"type":["network"]}`), time.Time{}, time.Time{}, ""},
		{"filters=" + url.QueryEscape(`{"type":{"boat":true}}`), time.Time{}, time.Time{}, "type=boat"},
		{"filters=" + url.QueryEscape(`{"scope":{"galaxy":true}}`), time.Time{}, time.Time{}, "scope=galaxy"},
		{"filters=" + url.QueryEscape(`{"colour":{"red":true}}`), time.Time{}, time.Time{}, "colour"},
		{"filters=nope", time.Time{}, time.Time{}, "filters"},
		{"filters=" + url.QueryEscape(`{"type":{"container":true,"port":true,"link":true}}`), time.Time{}, time.Time{}, ""},
		{"filters=" + url.QueryEscape(`{"event":{"die":true,"exec_start":true,"publish":true}}`), time.Time{}, time.Time{}, ""},
		{"filters=" + url.QueryEscape(`{"event":{"exec_start: sh -c true":true,"health_status: healthy":true}}`), time.Time{}, time.Time{}, ""},
		{"filters=" + url.QueryEscape(`{"event":{"dei":true}}`), time.Time{}, time.Time{}, "event=dei"},
		{"filters=" + url.QueryEscape(`{"event":{"die: now":true}}`), time.Time{}, time.Time{}, "event=die: now"},
		{"filters=" + url.QueryEscape(`{"container":{"web":true},"type":{"ship":true}}`), time.Time{}, time.Time{}, "type=ship"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, err := parseEventQuery(httptest.NewRequest("GET", "/events?"+tt.query, nil), now)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one naming %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !q.since.Equal(tt.since) || !q.until.Equal(tt.until) {
				t.Errorf("since, until = %v, %v; want %v, %v", q.since, q.until, tt.since, tt.until)
			}
		})
	}
}

func TestEventMatch(t *testing.T) {
	connect := events.Message{Type: "network", Action: "connect", Scope: "local",
		Actor: events.Actor{ID: "abcdef0123", Attributes: map[string]string{"name": "front", "type": "bridge", "container": "c0ffee"}}}
	die := events.Message{Type: "container", Action: "die", Scope: "local",
		Actor: events.Actor{ID: "c0ffee4567", Attributes: map[string]string{"name": "web", "team": "db", "exitCode": "3", "execDuration": "0"}}}
	exec := events.Message{Type: "container", Action: "exec_start: sh -c exit 3", Scope: "local",
		Actor: events.Actor{ID: "c0ffee4567", Attributes: map[string]string{"name": "web", "pid": "42"}}}
	port := events.Message{Type: "port", Action: "publish", Scope: "local",
		Actor: events.Actor{ID: "c0ffee4567", Attributes: map[string]string{"name": "web", "network": "front", "ports": "0.0.0.0:8080->80/tcp"}}}
	tests := []struct {
		name    string
		m       events.Message
		filters string
		want    bool
	}{
		{"no filter", connect, `{}`, true},
		{"type", connect, `{"type":{"network":true}}`, true},
		{"other type", connect, `{"type":{"container":true}}`, false},
		{"either type", connect, `{"type":{"container":true,"network":true}}`, true},
		{"action", connect, `{"event":{"connect":true}}`, true},
		{"other action", connect, `{"event":{"disconnect":true}}`, false},
		{"network name", connect, `{"network":{"front":true}}`, true},
		{"network ID prefix", connect, `{"network":{"abcd":true}}`, true},
		{"other network", connect, `{"network":{"back":true}}`, false},
		{"network name prefix", connect, `{"network":{"fro":true}}`, true}, // Docker: names by prefix too
		{"container attribute is not the actor", connect, `{"container":{"c0ffee":true}}`, false},
		{"label", connect, `{"label":{"type=bridge":true}}`, true},
		{"other label", connect, `{"label":{"type=macvlan":true}}`, false},
		{"scope", connect, `{"scope":{"local":true}}`, true},
		{"other scope", connect, `{"scope":{"swarm":true}}`, false},
		{"volume", connect, `{"volume":{"v1":true}}`, false},
		{"all three", connect, `{"type":{"network":true},"event":{"connect":true},"network":{"front":true}}`, true},

		{"die of web", die, `{"type":{"container":true},"event":{"die":true},"container":{"web":true}}`, true},
		{"die by ID prefix", die, `{"container":{"c0ffee":true}}`, true},
		{"die of another", die, `{"container":{"db":true}}`, false},
		{"die, not start", die, `{"event":{"start":true}}`, false},
		{"exit code", die, `{"label":{"exitCode=3":true}}`, true},
		{"sandbox label", die, `{"label":{"team=db":true,"team":true}}`, true},
		{"sandbox label, other value", die, `{"label":{"team=web":true}}`, false},
		{"no image", die, `{"image":{"busybox":true}}`, false},
		{"network key matches any type", die, `{"network":{"we":true}}`, true}, // as Docker: type-blind
		{"type network excludes it", die, `{"type":{"network":true},"network":{"we":true}}`, false},

		{"exec_start by prefix", exec, `{"event":{"exec_start":true}}`, true},
		{"exec_start exactly", exec, `{"event":{"exec_start: sh -c exit 3":true}}`, true},
		{"exec_start and die", exec, `{"event":{"exec_start":true,"die":true}}`, true},
		{"start is not exec_start", exec, `{"event":{"start":true}}`, false},

		{"port by container name", port, `{"container":{"web":true}}`, true},
		{"port type", port, `{"type":{"port":true},"event":{"publish":true}}`, true},
		{"port unpublish", port, `{"event":{"unpublish":true}}`, false},
		{"port of the network", port, `{"label":{"network=front":true}}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parseFilters(tt.filters)
			if err != nil {
				t.Fatal(err)
			}
			if got := (eventQuery{f: f}).match(tt.m); got != tt.want {
				t.Errorf("%s on %s %s: match = %v, want %v", tt.filters, tt.m.Type, tt.m.Action, got, tt.want)
			}
		})
	}
}

// A sandbox's lifecycle through the handler: Docker's filters pick its die
// events by name, and each is in Docker's message shape.
func TestEventsSandboxLifecycle(t *testing.T) {
	now := time.Now()
	ev := func(ago time.Duration, typ, action, id, name string, attrs ...string) engine.Event {
		a := map[string]string{"name": name}
		for i := 0; i+1 < len(attrs); i += 2 {
			a[attrs[i]] = attrs[i+1]
		}
		return engine.Event{Type: typ, Action: action, ID: id, Time: now.Add(-ago), Attrs: a}
	}
	f := &fakeBackend{past: []engine.Event{
		ev(9*time.Second, "container", "create", "c0ffee", "web"),
		ev(8*time.Second, "network", "connect", "feed", "front", "container", "c0ffee", "type", "bridge"),
		ev(7*time.Second, "port", "publish", "c0ffee", "web", "network", "front", "ports", "0.0.0.0:8080->80/tcp"),
		ev(6*time.Second, "container", "start", "c0ffee", "web"),
		ev(5*time.Second, "container", "die", "c0ffee", "web", "exitCode", "3", "execDuration", "1"),
		ev(4*time.Second, "container", "die", "beef", "db", "exitCode", "0", "execDuration", "1"),
		ev(3*time.Second, "container", "destroy", "c0ffee", "web"),
	}}
	for _, tt := range []struct {
		filters string
		want    []string
	}{
		{`{"type":["container"],"event":["die"],"container":["web"]}`, []string{"container die c0ffee"}},
		{`{"container":["web"]}`, []string{"container create c0ffee", "port publish c0ffee", "container start c0ffee",
			"container die c0ffee", "container destroy c0ffee"}},
		{`{"type":["network","port"]}`, []string{"network connect feed", "port publish c0ffee"}},
		{`{"event":["die"],"label":["exitCode=0"]}`, []string{"container die beef"}},
	} {
		t.Run(tt.filters, func(t *testing.T) {
			path := fmt.Sprintf("/events?since=%d&until=%d&filters=%s", now.Add(-time.Minute).Unix(), now.Unix()-1, url.QueryEscape(tt.filters))
			w := call{method: "GET", path: path}.serve(t, f)
			if w.Code != 200 {
				t.Fatalf("status %d: %s", w.Code, w.Body.String())
			}
			var got []string
			dec := json.NewDecoder(w.Body)
			for dec.More() {
				var raw json.RawMessage
				var m events.Message
				var legacy map[string]any
				if err := dec.Decode(&raw); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(raw, &m); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(raw, &legacy); err != nil {
					t.Fatal(err)
				}
				if m.Scope != "local" || m.Time == 0 || m.TimeNano/1e9 != m.Time || m.Actor.Attributes["name"] == "" {
					t.Errorf("message %+v", m)
				}
				// API < 1.52: dockerd adds status, id and from to container events only
				if want := m.Type == "container"; want != (legacy["status"] == string(m.Action) && legacy["id"] == m.Actor.ID && legacy["from"] == "") {
					t.Errorf("%s event: legacy fields in %s", m.Type, raw)
				}
				if _, ok := legacy["status"]; ok != (m.Type == "container") {
					t.Errorf("%s event: status present %v", m.Type, ok)
				}
				got = append(got, string(m.Type)+" "+string(m.Action)+" "+m.Actor.ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("stream %q, want %q", got, tt.want)
			}
		})
	}
	w := call{method: "GET", path: "/events?filters=" + url.QueryEscape(`{"event":["dei"]}`)}.serve(t, f)
	if w.Code != 400 || !strings.Contains(w.Body.String(), "event=dei") {
		t.Errorf("misspelt action: %d %s", w.Code, w.Body.String())
	}
}
