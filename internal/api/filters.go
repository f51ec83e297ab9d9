package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// filters is Docker's filter argument: key -> set of values. The wire form is
// a JSON map of sets ({"driver":{"bridge":true}}) or, from old clients, of
// lists ({"driver":["bridge"]}).
type filters map[string]map[string]bool

func parseFilters(raw string) (filters, error) {
	f := filters{}
	if raw == "" {
		return f, nil
	}
	var sets map[string]map[string]bool
	if err := json.Unmarshal([]byte(raw), &sets); err == nil {
		for k, vs := range sets {
			f[k] = vs
		}
		return f, nil
	}
	var lists map[string][]string
	if err := json.Unmarshal([]byte(raw), &lists); err != nil {
		return nil, fmt.Errorf("invalid filters %q: not a JSON map of sets or lists", raw)
	}
	for k, vs := range lists {
		f[k] = map[string]bool{}
		for _, v := range vs {
			f[k][v] = true
		}
	}
	return f, nil
}

// check refuses keys outside allowed.
func (f filters) check(allowed ...string) error {
	for k := range f {
		if !slices.Contains(allowed, k) {
			return fmt.Errorf("invalid filter '%s'", k)
		}
	}
	return nil
}

// any is true when key is absent or one of its values satisfies ok.
func (f filters) any(key string, ok func(string) bool) bool {
	vs, present := f[key]
	if !present || len(vs) == 0 {
		return true
	}
	for v := range vs {
		if ok(v) {
			return true
		}
	}
	return false
}

// labels is true when every "key" or "key=value" under filter key matches.
func (f filters) labels(key string, labels map[string]string) bool {
	for want := range f[key] {
		k, v, hasV := strings.Cut(want, "=")
		got, ok := labels[k]
		if !ok || hasV && got != v {
			return false
		}
	}
	return true
}

// notLabels is true when no "label!" filter matches.
func (f filters) notLabels(labels map[string]string) bool {
	for want := range f["label!"] {
		k, v, hasV := strings.Cut(want, "=")
		if got, ok := labels[k]; ok && (!hasV || got == v) {
			return false
		}
	}
	return true
}

// until parses the "until" filter: a Unix timestamp, an RFC 3339 time, or a
// Go duration before now ("10m"). Like Docker, one value at most.
func (f filters) until(now time.Time) (time.Time, error) {
	if len(f["until"]) > 1 {
		return time.Time{}, fmt.Errorf("invalid filter 'until': more than one value")
	}
	for v := range f["until"] {
		t, err := parseTime(v, now)
		if err != nil {
			return time.Time{}, fmt.Errorf("invalid filter 'until=%s': %w", v, err)
		}
		return t, nil
	}
	return time.Time{}, nil
}

// parseTime reads Docker's time arguments (filters, events' since and
// until): Unix seconds with an optional fraction ("1700000000.5"), RFC 3339,
// or a positive Go duration counted back from now ("10m").
func parseTime(v string, now time.Time) (time.Time, error) {
	if sec, frac, ok := strings.Cut(v, "."); ok || sec != "" {
		if s, err := strconv.ParseInt(sec, 10, 64); err == nil {
			ns := int64(0)
			if ok {
				if len(frac) == 0 || len(frac) > 9 {
					return time.Time{}, errors.New("not a timestamp or a positive duration")
				}
				n, err := strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
				if err != nil || n < 0 {
					return time.Time{}, errors.New("not a timestamp or a positive duration")
				}
				ns = n
			}
			return time.Unix(s, ns), nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if x, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return x, nil
	}
	return time.Time{}, errors.New("not a timestamp or a positive duration")
}
