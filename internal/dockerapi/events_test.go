package dockerapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// eventsDockerd serves GET /events with h and reports each request's
// filters parameter on filters.
func eventsDockerd(t *testing.T, h func(w http.ResponseWriter, r *http.Request)) (*Client, <-chan string) {
	t.Helper()
	filters := make(chan string, 4)
	sock := filepath.Join(t.TempDir(), "docker.sock")
	serveUnix(t, sock, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/events" {
			http.NotFound(w, r)
			return
		}
		filters <- r.URL.Query().Get("filters")
		h(w, r)
	}))
	c, err := New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	return c, filters
}

// writeEvents sends lines as dockerd does: one JSON object per line, each
// flushed at once.
func writeEvents(w http.ResponseWriter, lines ...string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	for _, l := range lines {
		_, _ = io.WriteString(w, l+"\n")
		w.(http.Flusher).Flush()
	}
}

func TestEvents(t *testing.T) {
	lines := strings.Split(strings.TrimSpace(fixture(t, "events.jsonl")), "\n")
	connect := Event{Type: "network", Action: "connect", Time: 1762765982, TimeNano: 1762765982418828345,
		Actor: Actor{ID: netID, Attributes: map[string]string{"container": ctrID, "name": "web-net", "type": "tether"}}}
	for _, tc := range []struct {
		name    string
		serve   func(w http.ResponseWriter, r *http.Request)
		cancel  bool // cancel the context after the events arrived
		want    int  // events before the error
		wantErr error
		errText string
	}{
		{name: "dockerd closes the stream", serve: func(w http.ResponseWriter, r *http.Request) { writeEvents(w, lines...) },
			want: 3, wantErr: ErrStreamEnded, errText: "docker API: GET /events: event stream ended"},
		{name: "malformed event", serve: func(w http.ResponseWriter, r *http.Request) {
			writeEvents(w, lines[0], lines[1], `{"Type":"network","Action":`, lines[2])
		}, want: 2, errText: "docker API: GET /events: read event:"},
		{name: "not JSON at all", serve: func(w http.ResponseWriter, r *http.Request) { writeEvents(w, "<html>proxy error</html>") },
			errText: "read event: invalid character '<'"},
		{name: "caller cancels", serve: func(w http.ResponseWriter, r *http.Request) {
			writeEvents(w, lines[:2]...)
			<-r.Context().Done()
		}, cancel: true, want: 2, wantErr: context.Canceled},
		{name: "bad filter", serve: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"message":"invalid filter 'color'"}`)
		}, errText: "docker API: GET /events: 400: invalid filter 'color'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, filters := eventsDockerd(t, tc.serve)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			events, errc := c.Events(ctx, map[string][]string{"type": {"network"}, "event": {"connect", "disconnect"}})
			var got []Event
			for len(got) < tc.want {
				select {
				case ev := <-events:
					got = append(got, ev)
				case err := <-errc:
					t.Fatalf("error after %d of %d events: %v", len(got), tc.want, err)
				}
			}
			if tc.cancel {
				cancel()
			}
			err := <-errc
			if err == nil || !strings.Contains(err.Error(), tc.errText) || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Errorf("error %v, want %q (is %v)", err, tc.errText, tc.wantErr)
			}
			select {
			case ev := <-events:
				t.Errorf("event after the error: %+v", ev)
			default:
			}
			if tc.want >= 2 && !reflect.DeepEqual(got[1], connect) {
				t.Errorf("second event:\n got %+v\nwant %+v", got[1], connect)
			}
			if tc.want == 3 && (got[0].Action != "create" || got[2].Action != "disconnect") {
				t.Errorf("events out of order: %s, %s, %s", got[0].Action, got[1].Action, got[2].Action)
			}
			var f map[string]map[string]bool
			if err := json.Unmarshal([]byte(<-filters), &f); err != nil {
				t.Fatal(err)
			}
			wantF := map[string]map[string]bool{"type": {"network": true}, "event": {"connect": true, "disconnect": true}}
			if !reflect.DeepEqual(f, wantF) {
				t.Errorf("filters %v, want %v", f, wantF)
			}
		})
	}
}

// TestEventsResubscribe: after the stream breaks, a new subscription gets
// the events dockerd sends from then on.
func TestEventsResubscribe(t *testing.T) {
	lines := strings.Split(strings.TrimSpace(fixture(t, "events.jsonl")), "\n")
	n := 0
	c, filters := eventsDockerd(t, func(w http.ResponseWriter, r *http.Request) {
		n++ // the fake serves one request at a time here
		writeEvents(w, lines[n-1])
	})
	for i, want := range []string{"create", "connect"} {
		events, errc := c.Events(context.Background(), nil)
		if ev := <-events; ev.Action != want {
			t.Errorf("subscription %d: %s, want %s", i, ev.Action, want)
		}
		if err := <-errc; !errors.Is(err, ErrStreamEnded) {
			t.Errorf("subscription %d: %v", i, err)
		}
		if f := <-filters; f != "" {
			t.Errorf("no filters given, sent %q", f)
		}
	}
}

func TestEventsDockerdDown(t *testing.T) {
	c, err := New("unix://" + filepath.Join(t.TempDir(), "docker.sock"))
	if err != nil {
		t.Fatal(err)
	}
	_, errc := c.Events(context.Background(), nil)
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "docker API: GET /events") {
		t.Errorf("Events without dockerd: %v", err)
	}
}
