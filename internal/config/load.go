package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// FlagValues holds the flags set explicitly on the command line: long flag
// name -> every text given for it, in order. A bool flag given bare records
// "true".
type FlagValues map[string][]string

// LoadBytes builds the Config from the content of the config file at path
// (nil = no file; path only names it in errors) and the explicitly set
// flags. It refuses unknown keys, wrong JSON types, keys given both ways,
// invalid values and values Tether does not support yet; Docker keys outside
// networking are accepted with a warning in Config.Warnings.
func LoadBytes(path string, data []byte, flags FlagValues) (*Config, error) {
	file, err := parseFile(path, data)
	if err != nil {
		return nil, err
	}
	fromFile, warnings, err := readFile(path, file)
	if err != nil {
		return nil, err
	}
	fromFlags, err := readFlags(flags)
	if err != nil {
		return nil, err
	}
	if err := checkConflicts(file, flags); err != nil {
		return nil, err
	}
	maps.Copy(fromFile, fromFlags)
	c, err := build(fromFile)
	if err != nil {
		return nil, err
	}
	c.Warnings = append(warnings, c.Warnings...)
	return c, nil
}

// parseFile decodes daemon.json into generic JSON values. An empty file (or
// only a UTF-8 byte order mark and blanks) sets nothing, as with dockerd.
func parseFile(path string, data []byte) (map[string]any, error) {
	data = bytes.TrimSpace(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")))
	if len(data) == 0 {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("config file %q: invalid JSON: %w", path, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("config file %q: invalid JSON: data after the top-level object", path)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("config file %q: expected a JSON object, got %s", path, jsonType(v))
	}
	return m, nil
}

// readFile sorts the file's keys: Tether options (decoded to their kind),
// Docker networking keys Tether refuses later, Docker keys outside
// networking (one warning) and unknown keys (an error).
func readFile(path string, file map[string]any) (map[string]any, []string, error) {
	out := map[string]any{}
	var ignored, unknown []string
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(file)) {
		v := file[key]
		switch o := optionByKey[key]; {
		case o != nil:
			typed, err := o.kind.fromJSON(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", key, err))
			}
			out[key] = typed
		case dockerNetworkOnly(key):
			out[key] = v
		case dockerOtherKeys[key]:
			ignored = append(ignored, key)
		default:
			unknown = append(unknown, key)
		}
	}
	if len(unknown) > 0 {
		errs = append([]error{fmt.Errorf("the following directives don't match any configuration option: %s",
			strings.Join(unknown, ", "))}, errs...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("config file %q: %w", path, err)
	}
	return out, ignoredWarning(ignored), nil
}

func ignoredWarning(keys []string) []string {
	if len(keys) == 0 {
		return nil
	}
	return []string{"ignoring Docker options outside networking: " + strings.Join(keys, ", ")}
}

// readFlags decodes the explicitly set flags, keyed by daemon.json key.
func readFlags(flags FlagValues) (map[string]any, error) {
	out := map[string]any{}
	for _, name := range slices.Sorted(maps.Keys(flags)) {
		o := optionByFlag[name]
		if o == nil {
			return nil, fmt.Errorf("unknown flag %q", name)
		}
		v, err := o.kind.parseFlag(flags[name])
		if err != nil {
			return nil, fmt.Errorf("%s: invalid --%s: %w", o.key, name, err)
		}
		out[o.key] = v
	}
	return out, nil
}

// checkConflicts refuses keys given both in the file and as a flag, listing
// all of them sorted, in dockerd's words.
func checkConflicts(file map[string]any, flags FlagValues) error {
	var conflicts []string
	for name, texts := range flags {
		o := optionByFlag[name]
		if fv, ok := file[o.key]; ok {
			conflicts = append(conflicts, fmt.Sprintf("%s: (from flag: %s, from file: %v)", o.key, flagText(o, texts), fv))
		}
	}
	if len(conflicts) == 0 {
		return nil
	}
	slices.Sort(conflicts)
	return fmt.Errorf("the following directives are specified both as a flag and in the configuration file: %s",
		strings.Join(conflicts, ", "))
}

func flagText(o *option, texts []string) string {
	if o.kind.repeatable() {
		return fmt.Sprint(texts)
	}
	return texts[len(texts)-1]
}

// build applies the given values over the defaults, validates the result
// and refuses what is not supported yet. Empty values keep the default.
func build(given map[string]any) (*Config, error) {
	c := defaults()
	var errs []error
	for _, o := range options {
		v, ok := given[o.key]
		if !ok || isEmpty(v) {
			continue
		}
		if err := o.set(c, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", o.key, err))
		}
	}
	normalize(c)
	errs = append(errs, ip6tablesGiven(c, given)...)
	errs = append(errs, validate(c)...)
	errs = append(errs, checkGaps(given))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if c.Debug {
		c.LogLevel = "debug"
	}
	c.Warnings = tlsWarnings(c)
	return c, nil
}

// ip6tablesGiven settles ip6tables, which defaults to true: with iptables
// false it is false unless given, and given true it is an error (dockerd's
// words). validate then holds ip6tables to iptables either way.
func ip6tablesGiven(c *Config, given map[string]any) []error {
	if c.IPTables {
		return nil
	}
	if v, ok := given["ip6tables"].(bool); ok && v {
		return []error{fmt.Errorf("ip6tables: ip6tables cannot be enabled when iptables is disabled")}
	}
	c.IP6Tables = false
	return nil
}

// normalize puts equivalent spellings into one form.
func normalize(c *Config) {
	c.LogLevel = strings.ToLower(c.LogLevel)
	normalizeHosts(c)
}
