package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/api/types/events"

	"github.com/tether-net/tether/internal/engine"
)

// eventFilterKeys are the filter keys Docker's GET /events accepts.
var eventFilterKeys = []string{"config", "container", "daemon", "event", "image", "label", "network",
	"node", "plugin", "scope", "secret", "service", "type", "volume"}

// eventTypes are Docker's event types plus Tether's own: "link" (links.go)
// and "port" (published ports, which Docker has no event for).
var eventTypes = map[string]bool{"builder": true, "config": true, "container": true, "daemon": true,
	"image": true, "network": true, "node": true, "plugin": true, "secret": true, "service": true, "volume": true,
	"link": true, "port": true}

// eventActions are the actions an "event" filter may name: Docker's
// (moby's events.Action list) and Tether's port actions. Docker accepts
// any word and matches nothing with a misspelt one; Tether says so.
var eventActions = map[string]bool{}

func init() {
	for _, a := range strings.Fields(`create start restart stop checkpoint pause unpause attach detach resize
		update rename kill die oom destroy remove commit top copy archive-path extract-to-dir export import save
		load tag untag push pull prune delete enable disable connect disconnect reload mount unmount
		exec_create exec_start exec_die exec_detach health_status publish unpublish`) {
		eventActions[a] = true
	}
}

// fuzzyActions are the actions Docker writes with a suffix ("exec_start:
// sh -c ..."): a filter naming one matches the action by prefix.
var fuzzyActions = []string{"exec_create", "exec_start", "health_status"}

// actorKeys are the filter keys Docker matches against an event's actor,
// whatever the event's type: the value is a prefix of the actor's ID or of
// its "name" attribute (moby's daemon/events Filter.fuzzyMatchName).
var actorKeys = []string{"config", "container", "daemon", "network", "node", "plugin", "secret", "service", "volume"}

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
	for a := range eq.f["event"] {
		if !knownAction(a) {
			return eq, fmt.Errorf("invalid filter 'event=%s': unknown event action", a)
		}
	}
	for s := range eq.f["scope"] {
		if s != "local" && s != "swarm" {
			return eq, fmt.Errorf("invalid filter 'scope=%s': must be local or swarm", s)
		}
	}
	return eq, nil
}

// knownAction: one of eventActions, or one of the suffixed actions with
// its suffix ("exec_start: sh", "health_status: healthy").
func knownAction(a string) bool {
	if eventActions[a] {
		return true
	}
	base, _, ok := strings.Cut(a, ":")
	return ok && slices.Contains(fuzzyActions, base)
}

// match applies Docker's rules (moby's daemon/events Filter.Include):
// every given key must match; "type" and "scope" exactly; "event" the
// action exactly, or by prefix when one of the values is exec_create,
// exec_start or health_status; the actor keys by prefix of the actor's ID
// or name, on events of any type; "image" the actor's ID or its "image"
// attribute exactly; "label" the actor's attributes.
func (q eventQuery) match(m events.Message) bool {
	if !q.f.any("type", func(t string) bool { return t == string(m.Type) }) ||
		!q.f.any("scope", func(s string) bool { return s == m.Scope }) ||
		!q.matchAction(string(m.Action)) ||
		!q.f.labels("label", m.Actor.Attributes) ||
		!q.f.any("image", func(v string) bool { return v == m.Actor.ID || v == m.Actor.Attributes["image"] }) {
		return false
	}
	name := m.Actor.Attributes["name"]
	for _, k := range actorKeys {
		if !q.f.any(k, func(v string) bool { return strings.HasPrefix(m.Actor.ID, v) || strings.HasPrefix(name, v) }) {
			return false
		}
	}
	return true
}

func (q eventQuery) matchAction(action string) bool {
	fuzzy := slices.ContainsFunc(fuzzyActions, func(a string) bool { return q.f["event"][a] })
	return q.f.any("event", func(a string) bool { return a == action || fuzzy && strings.HasPrefix(action, a) })
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

// legacyContainerMessage is a container event as dockerd sends it to API
// clients before 1.52 (moby's backFillLegacy): the message plus the fields
// of the old format, "status" (the action), "id" (the actor's ID) and
// "from" (its image; "" for a sandbox, which has none). Old clients read
// those rather than Action and Actor.
type legacyContainerMessage struct {
	events.Message
	Status string `json:"status"`
	ID     string `json:"id"`
	From   string `json:"from"`
}

// withLegacyFields adds the legacy fields to container events while
// Tether's API version is below 1.52 (it is 1.51): every client gets them,
// as from dockerd at the version it negotiated.
func withLegacyFields(m events.Message) any {
	if m.Type != events.ContainerEventType || cmpVersion(APIVersion, "1.52") >= 0 {
		return m
	}
	return legacyContainerMessage{Message: m, Status: string(m.Action), ID: m.Actor.ID, From: m.Actor.Attributes["image"]}
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
		if err := enc.Encode(withLegacyFields(m)); err != nil {
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
		case <-s.closing:
			return // the daemon stops: the stream ends, as dockerd's does
		case e, ok := <-live:
			if !ok || !send(e) {
				return
			}
		}
	}
}
