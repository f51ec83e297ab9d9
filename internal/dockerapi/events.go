package dockerapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// ErrStreamEnded is the error of an event stream that dockerd closed
// (dockerd stopped or restarted).
var ErrStreamEnded = errors.New("event stream ended")

// Event is one message of GET /events. Network events carry the attributes
// "name" and "type" (the driver); connect and disconnect also "container".
type Event struct {
	Type     string // "network", "container", ...
	Action   string // "create", "connect", "disconnect", "destroy", ...
	Actor    Actor
	Time     int64 `json:"time"`     // seconds since the epoch
	TimeNano int64 `json:"timeNano"` // the same in nanoseconds
}

// Actor is the object an event is about.
type Actor struct {
	ID         string
	Attributes map[string]string
}

// Events follows dockerd's event stream from now on: GET /events with
// filters such as {"type": {"network"}, "event": {"connect", "disconnect"}}
// (sent as Docker's CLI sends them, {"type": {"network": true}}). Events
// arrive on the first channel in dockerd's order; the stream has no timeout
// and runs until ctx ends or it breaks, and then the second channel receives
// exactly one error (wrapping ctx's error, ErrStreamEnded, or the failure)
// after every event read before it. Neither channel is closed; a caller that
// wants to go on subscribes again (events in between are missed: re-read the
// state it depends on).
func (c *Client) Events(ctx context.Context, filters map[string][]string) (<-chan Event, <-chan error) {
	events := make(chan Event)
	errc := make(chan error, 1)
	go func() { errc <- c.stream(ctx, filters, events) }()
	return events, errc
}

// stream reads the event stream into out until it ends; it returns why.
func (c *Client) stream(ctx context.Context, filters map[string][]string, out chan<- Event) error {
	const path = "/events"
	q := url.Values{}
	if len(filters) > 0 {
		q.Set("filters", encodeFilters(filters))
	}
	resp, err := c.send(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			switch {
			case ctx.Err() != nil:
				return fmt.Errorf("docker API: GET %s: %w", path, ctx.Err())
			case errors.Is(err, io.EOF):
				return fmt.Errorf("docker API: GET %s: %w", path, ErrStreamEnded)
			}
			return fmt.Errorf("docker API: GET %s: read event: %w", path, err)
		}
		select {
		case out <- ev:
		case <-ctx.Done():
			return fmt.Errorf("docker API: GET %s: %w", path, ctx.Err())
		}
	}
}

// encodeFilters writes filters in the form Docker's CLI sends:
// {"key": {"value": true}}.
func encodeFilters(filters map[string][]string) string {
	sets := make(map[string]map[string]bool, len(filters))
	for k, vs := range filters {
		set := make(map[string]bool, len(vs))
		for _, v := range vs {
			set[v] = true
		}
		sets[k] = set
	}
	b, _ := json.Marshal(sets) // maps of strings and bools always marshal
	return string(b)
}
