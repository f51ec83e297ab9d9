package topology

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// clean makes a user's string safe to show: control and format characters
// (line breaks, bidirectional overrides, zero-width joiners) and invalid
// UTF-8 become U+FFFD, so a name can neither break a line of DOT nor pass
// for another name in the picture. The renderers escape what remains.
func clean(s string) string {
	ok := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return unicode.ReplacementChar
		}
		return r
	}, s)
}

// short is clean(s) cut to n characters, the last of them "…" when cut.
func short(s string, n int) string {
	s = clean(s)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// hostLabel is how a host is named in the picture: its name (its ID when
// it has none), "(this host)" or "(down)".
func hostLabel(h Host) string {
	name := h.Name
	if name == "" {
		name = h.ID
	}
	switch {
	case h.Self:
		name += " (this host)"
	case !h.Live:
		name += " (down)"
	}
	return name
}

// netDetail is a network's second line: driver, subnets, VNI, internal.
func netDetail(n Network) string {
	parts := []string{n.Driver}
	parts = append(parts, n.Subnets...)
	if n.VNI != 0 {
		parts = append(parts, "vni "+itoa(n.VNI))
	}
	if n.Internal {
		parts = append(parts, "internal")
	}
	return strings.Join(parts, " · ")
}

// driverColor is a network's stroke colour: one per driver kind.
func driverColor(driver string) string {
	switch driver {
	case "bridge":
		return "#2f6db5"
	case "overlay":
		return "#7b3fb0"
	case "macvlan", "ipvlan":
		return "#1e8a5a"
	case "ovs":
		return "#b5651d"
	case "host", "null", "none":
		return "#888888"
	}
	return "#555555"
}

// linkColor draws point-to-point links.
const linkColor = "#c0392b"
