package api

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"
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
	tests := []struct {
		filters string
		want    bool
	}{
		{`{}`, true},
		{`{"type":{"network":true}}`, true},
		{`{"type":{"container":true}}`, false},
		{`{"type":{"container":true,"network":true}}`, true},
		{`{"event":{"connect":true}}`, true},
		{`{"event":{"disconnect":true}}`, false},
		{`{"network":{"front":true}}`, true},
		{`{"network":{"abcd":true}}`, true},
		{`{"network":{"back":true}}`, false},
		{`{"network":{"fro":true}}`, false}, // names match exactly, IDs by prefix
		{`{"container":{"c0ffee":true}}`, false},
		{`{"label":{"type=bridge":true}}`, true},
		{`{"label":{"type=macvlan":true}}`, false},
		{`{"scope":{"local":true}}`, true},
		{`{"scope":{"swarm":true}}`, false},
		{`{"volume":{"v1":true}}`, false},
		{`{"type":{"network":true},"event":{"connect":true},"network":{"front":true}}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.filters, func(t *testing.T) {
			f, err := parseFilters(tt.filters)
			if err != nil {
				t.Fatal(err)
			}
			if got := (eventQuery{f: f}).match(connect); got != tt.want {
				t.Errorf("match = %v, want %v", got, tt.want)
			}
		})
	}
}
