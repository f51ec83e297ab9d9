package engine

import (
	"crypto/rand"
	"encoding/hex"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// nameRE accepts a DNS label (RFC 1123: letters, digits, hyphens, 1-63
// characters, no hyphen at either end) plus underscores, which Compose puts in
// every network name it makes ("app_default").
var nameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$`)

// ifNameRE is what the kernel accepts as an interface name, minus the
// characters that make shell use painful.
var ifNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

func validName(field, name string) error {
	if len(name) > 63 {
		return invalidf("invalid %s %q: longer than 63 characters (a DNS label)", field, name)
	}
	if !nameRE.MatchString(name) {
		return invalidf("invalid %s %q: must be a DNS label: letters, digits, '-' or '_', starting and ending with a letter or digit", field, name)
	}
	return nil
}

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// resolve finds one object among candidates by exact ID, then exact name,
// then unique ID prefix, the order Docker uses.
func resolve[T any](what, ref string, all map[string]T, idOf, nameOf func(T) string) (T, error) {
	var zero T
	if ref == "" {
		return zero, invalidf("%s name or ID is empty", what)
	}
	if v, ok := all[ref]; ok {
		return v, nil
	}
	for _, v := range all {
		if nameOf(v) == ref {
			return v, nil
		}
	}
	var found []T
	for id, v := range all {
		if strings.HasPrefix(id, ref) {
			found = append(found, v)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return zero, notFoundf("%s %s not found", what, ref)
	}
	names := make([]string, len(found))
	for i, v := range found {
		names[i] = nameOf(v)
	}
	sort.Strings(names)
	return zero, invalidf("%s ID prefix %q is ambiguous: matches %s", what, ref, strings.Join(names, ", "))
}

// addSandboxLocked records a sandbox by ID and by name. Called with e.mu
// held.
func (e *Engine) addSandboxLocked(sb *sbState) {
	e.sandboxes[sb.rec.ID] = sb
	e.byName[sb.rec.Name] = append(e.byName[sb.rec.Name], sb)
}

// dropSandboxLocked forgets a sandbox by ID and by name. Called with e.mu
// held.
func (e *Engine) dropSandboxLocked(sb *sbState) {
	delete(e.sandboxes, sb.rec.ID)
	l := slices.DeleteFunc(e.byName[sb.rec.Name], func(x *sbState) bool { return x == sb })
	if len(l) == 0 {
		delete(e.byName, sb.rec.Name)
		return
	}
	e.byName[sb.rec.Name] = l
}
