package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// kind is the shape of an option's value. Decoded values are string, bool,
// int, []string, map[string]string or []rawPool, whether they came from
// daemon.json or from flags.
type kind int

const (
	kindString kind = iota
	kindBool
	kindInt
	kindList  // file: array of strings; flag: repeatable
	kindMap   // file: object of strings; flag: repeatable key=value
	kindPools // file: array of {"base","size"}; flag: repeatable base=CIDR,size=N
)

// rawPool is one default-address-pools entry before its base is parsed.
type rawPool struct {
	base string
	size int
}

// repeatable reports whether the flag may be given several times, each
// occurrence adding to the value.
func (k kind) repeatable() bool {
	return k == kindList || k == kindMap || k == kindPools
}

// flagType names the value in flag help.
func (k kind) flagType() string {
	return [...]string{"string", "bool", "int", "list", "key=value", "base=CIDR,size=N"}[k]
}

// fromJSON checks a value decoded by encoding/json (with UseNumber) against
// the kind and converts it.
func (k kind) fromJSON(v any) (any, error) {
	switch k {
	case kindString:
		return want[string](v, "string")
	case kindBool:
		return want[bool](v, "boolean")
	case kindInt:
		return jsonInt(v)
	case kindList:
		return jsonList(v)
	case kindMap:
		return jsonMap(v)
	default:
		return jsonPools(v)
	}
}

func want[T any](v any, name string) (T, error) {
	t, ok := v.(T)
	if !ok {
		return t, fmt.Errorf("expected %s, got %s", name, jsonType(v))
	}
	return t, nil
}

func jsonInt(v any) (int, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("expected integer, got %s", jsonType(v))
	}
	i, err := strconv.ParseInt(string(n), 10, 0)
	if err != nil {
		return 0, fmt.Errorf("expected integer, got %s", n)
	}
	return int(i), nil
}

func jsonList(v any) ([]string, error) {
	items, err := want[[]any](v, "array of strings")
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(items))
	for i, item := range items {
		s, ok := item.(string)
		if !ok {
			return nil, fmt.Errorf("element %d: expected string, got %s", i, jsonType(item))
		}
		out = append(out, s)
	}
	return out, nil
}

func jsonMap(v any) (map[string]string, error) {
	m, err := want[map[string]any](v, "object")
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(m))
	for key, item := range m {
		s, ok := item.(string)
		if !ok {
			return nil, fmt.Errorf("%q: expected string, got %s", key, jsonType(item))
		}
		out[key] = s
	}
	return out, nil
}

func jsonPools(v any) ([]rawPool, error) {
	items, err := want[[]any](v, `array of {"base": CIDR, "size": N}`)
	if err != nil {
		return nil, err
	}
	out := make([]rawPool, 0, len(items))
	for i, item := range items {
		p, err := jsonPool(item)
		if err != nil {
			return nil, fmt.Errorf("element %d: %w", i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func jsonPool(v any) (rawPool, error) {
	var p rawPool
	m, err := want[map[string]any](v, "object")
	if err != nil {
		return p, err
	}
	for field, fv := range m {
		switch field {
		case "base":
			p.base, err = want[string](fv, "string")
		case "size":
			p.size, err = jsonInt(fv)
		default:
			err = errors.New("unknown field")
		}
		if err != nil {
			return p, fmt.Errorf("%q: %w", field, err)
		}
	}
	return p, nil
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	default:
		return "object"
	}
}

// parseFlag converts the texts given for a flag, in order, to the kind's
// value. A scalar flag given twice keeps the last text, as pflag does.
func (k kind) parseFlag(texts []string) (any, error) {
	last := ""
	if len(texts) > 0 {
		last = texts[len(texts)-1]
	}
	switch k {
	case kindString:
		return last, nil
	case kindBool:
		return strconv.ParseBool(last)
	case kindInt:
		return strconv.Atoi(last)
	case kindList:
		return append([]string(nil), texts...), nil
	case kindMap:
		return flagMap(texts)
	default:
		return flagPools(texts)
	}
}

func flagMap(texts []string) (map[string]string, error) {
	out := make(map[string]string, len(texts))
	for _, t := range texts {
		key, val, ok := strings.Cut(t, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("%q: expected key=value", t)
		}
		out[key] = val
	}
	return out, nil
}

func flagPools(texts []string) ([]rawPool, error) {
	out := make([]rawPool, 0, len(texts))
	for _, t := range texts {
		p, err := flagPool(t)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", t, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// flagPool parses "base=10.10.0.0/16,size=24".
func flagPool(text string) (rawPool, error) {
	var p rawPool
	for _, field := range strings.Split(text, ",") {
		name, val, _ := strings.Cut(field, "=")
		var err error
		switch name {
		case "base":
			p.base = val
		case "size":
			p.size, err = strconv.Atoi(val)
		default:
			err = errors.New("unknown field (want base=CIDR,size=N)")
		}
		if err != nil {
			return p, fmt.Errorf("%q: %w", name, err)
		}
	}
	return p, nil
}

// isEmpty reports whether a decoded value asks for nothing: "", 0, an empty
// list or map. Empty values leave the default in place, so the all-empty
// sample daemon.json files in circulation load cleanly.
func isEmpty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case int:
		return v == 0
	case json.Number:
		f, err := v.Float64()
		return err == nil && f == 0
	case []string:
		return len(v) == 0
	case []any:
		return len(v) == 0
	case map[string]string:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	case []rawPool:
		return len(v) == 0
	}
	return false
}

// isZero is isEmpty that also counts false: a Docker key whose value asks
// for nothing Tether doesn't already do.
func isZero(v any) bool {
	b, ok := v.(bool)
	return (ok && !b) || isEmpty(v)
}
