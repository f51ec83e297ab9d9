package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/moby/moby/api/types/events"

	"github.com/tether-net/tether/internal/engine"
)

// eventFilterKeys are the filter keys Docker's GET /events accepts. Tether
// emits network events only, so filters on other kinds simply match nothing.
var eventFilterKeys = []string{"config", "container", "daemon", "event", "image", "label", "network",
	"node", "plugin", "scope", "secret", "service", "type", "volume"}

var eventTypes = map[string]bool{"builder": true, "config": true, "container": true, "daemon": true,
	"image": true, "network": true, "node": true, "plugin": true, "secret": true, "service": true, "volume": true}

// eventQuery is a parsed GET /events request.
type eventQuery struct {
	since, until time.Time
	f            filters
}

func parseEventQuery(r *http.Request, now time.Time) (eventQuery, error) {
	q := r.URL.Query()
	var eq eventQuery
	var err error
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &eq.since}, {"until", &eq.until}} {
		if v := q.Get(p.name); v != "" {
			if *p.dst, err = parseTime(v, now); err != nil {
				return eq, fmt.Errorf("invalid %s %q: %w", p.name, v, err)
			}
		}
	}
	if !eq.since.IsZero() && !eq.until.IsZero() && eq.until.Before(eq.since) {
		return eq, fmt.Errorf("invalid until %q: before since %q", q.Get("until"), q.Get("since"))
	}
	if eq.f, err = parseFilters(q.Get("filters")); err != nil {
		return eq, err
	}
	if err := eq.f.check(eventFilterKeys...); err != nil {
		return eq, err
	}
	for t := range eq.f["type"] {
		if !eventTypes[t] {
			return eq, fmt.Errorf("invalid filter 'type=%s': unknown event type", t)
		}
	}
	for s := range eq.f["scope"] {
		if s != "local" && s != "swarm" {
			return eq, fmt.Errorf("invalid filter 'scope=%s': must be local or swarm", s)
		}
	}
	return eq, nil
}

// match applies Docker's rules: every given key must match; "network" and
// "container" match the actor's ID (prefix) or name, and only on events of
// that type; "event" matches the action; "label" the actor's attributes.
func (q eventQuery) match(m events.Message) bool {
	actor := func(kind string) bool {
		if _, ok := q.f[kind]; !ok {
			return true
		}
		if string(m.Type) != kind {
			return false
		}
		return q.f.any(kind, func(v string) bool {
			return strings.HasPrefix(m.Actor.ID, v) || v == m.Actor.Attributes["name"]
		})
	}
	return q.f.any("type", func(t string) bool { return t == string(m.Type) }) &&
		q.f.any("event", func(a string) bool { return a == string(m.Action) }) &&
		q.f.any("scope", func(s string) bool { return s == m.Scope }) &&
		q.f.labels("label", m.Actor.Attributes) &&
		actor("network") && actor("container") &&
		noneOf(q.f, "config", "daemon", "image", "node", "plugin", "secret", "service", "volume")
}

// noneOf is false when a filter names a kind Tether has no events of.
func noneOf(f filters, keys ...string) bool {
	for _, k := range keys {
		if len(f[k]) > 0 {
			return false
		}
	}
	return true
}

func (q eventQuery) inRange(t time.Time) bool {
	return (q.since.IsZero() || !t.Before(q.since)) && (q.until.IsZero() || !t.After(q.until))
}

func eventMessage(e engine.Event) events.Message {
	attrs := map[string]string{}
	for k, v := range e.Attrs {
		attrs[k] = v
	}
	return events.Message{
		Type: events.Type(e.Type), Action: events.Action(e.Action),
		Actor: events.Actor{ID: e.ID, Attributes: attrs},
		Scope: "local", Time: e.Time.Unix(), TimeNano: e.Time.UnixNano(),
	}
}

// events streams Docker-format event messages, one JSON object per line:
// kept events since `since`, then live ones until `until` (or until the
// client goes away when no until is given).
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	q, err := parseEventQuery(r, now)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	past, live, cancel := s.eng.SubscribeEvents(q.since)
	defer cancel()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	send := func(e engine.Event) bool {
		m := eventMessage(e)
		if !q.inRange(e.Time) || !q.match(m) {
			return true
		}
		if err := enc.Encode(m); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	for _, e := range past {
		if !send(e) {
			return
		}
	}
	if flusher != nil {
		flusher.Flush()
	}
	var stop <-chan time.Time
	if !q.until.IsZero() {
		if !q.until.After(now) {
			return
		}
		t := time.NewTimer(q.until.Sub(now))
		defer t.Stop()
		stop = t.C
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-stop:
			return
		case e, ok := <-live:
			if !ok || !send(e) {
				return
			}
		}
	}
}
