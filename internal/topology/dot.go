package topology

import (
	"io"
	"strconv"
	"strings"
)

// DOT writes g in Graphviz's DOT language (`tether network graph | dot
// -Tpng`): an undirected graph with networks as ellipses, one cluster per
// host holding its sandboxes as boxes (published ports in their labels), an
// edge per endpoint labelled with its interface and addresses, and dashed
// red edges for point-to-point links. Node IDs are generated (n0, s0, h0),
// never taken from names; every label and attribute value is a quoted,
// escaped string (dotString).
func DOT(w io.Writer, g Graph) error {
	var b strings.Builder
	b.WriteString("graph \"tether\" {\n")
	b.WriteString("\tgraph" + dotAttrs("label", summary(g), "labelloc", "t", "fontname", "sans-serif", "fontsize", "12", "rankdir", "LR") + ";\n")
	b.WriteString("\tnode" + dotAttrs("fontname", "sans-serif", "fontsize", "10") + ";\n")
	b.WriteString("\tedge" + dotAttrs("fontname", "sans-serif", "fontsize", "9") + ";\n")
	netID := map[string]string{}
	for i, n := range g.Networks {
		id := "n" + itoa(i)
		netID[n.ID] = id
		c := driverColor(n.Driver)
		b.WriteString("\t" + id + dotAttrs("label", clean(n.Name)+"\n"+clean(netDetail(n)), "shape", "ellipse",
			"style", "filled", "fillcolor", "#f4f4f4", "color", c) + ";\n")
	}
	sbID := dotHosts(&b, g)
	for _, s := range g.Sandboxes {
		for _, ep := range s.Endpoints {
			if n, ok := netID[ep.Network]; ok {
				b.WriteString("\t" + sbID[sbKey(s)] + " -- " + n + dotAttrs("label", endpointLabel(ep)) + ";\n")
			}
		}
	}
	for _, l := range g.Links {
		a, b2 := sbID[sbKey(Sandbox{ID: l.A, Host: selfID(g)})], sbID[sbKey(Sandbox{ID: l.B, Host: selfID(g)})]
		if a == "" || b2 == "" {
			continue
		}
		b.WriteString("\t" + a + " -- " + b2 + dotAttrs("label", linkLabel(l), "style", "dashed", "color", linkColor, "fontcolor", linkColor) + ";\n")
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// dotHosts writes one cluster per host with its sandboxes and returns the
// sandboxes' node IDs by sbKey.
func dotHosts(b *strings.Builder, g Graph) map[string]string {
	ids := map[string]string{}
	n := 0
	for i, h := range g.Hosts {
		b.WriteString("\tsubgraph \"cluster_h" + itoa(i) + "\" {\n")
		style := "solid"
		if !h.Self {
			style = "dashed"
		}
		b.WriteString("\t\tgraph" + dotAttrs("label", clean(hostLabel(h))+addrSuffix(h.Addr), "style", style) + ";\n")
		empty := true
		for _, s := range g.Sandboxes {
			if s.Host != h.ID {
				continue
			}
			id := "s" + itoa(n)
			n++
			ids[sbKey(s)] = id
			empty = false
			style := "solid"
			if s.Remote {
				style = "dashed"
			}
			b.WriteString("\t\t" + id + dotAttrs("label", sandboxLabel(s), "shape", "box", "style", style) + ";\n")
		}
		if empty {
			b.WriteString("\t\th" + itoa(i) + dotAttrs("label", "(no sandboxes)", "shape", "plaintext") + ";\n")
		}
		b.WriteString("\t}\n")
	}
	return ids
}

// sbKey tells a local sandbox from a remote one of the same ID.
func sbKey(s Sandbox) string { return s.Host + "/" + s.ID }

func selfID(g Graph) string {
	for _, h := range g.Hosts {
		if h.Self {
			return h.ID
		}
	}
	return LocalHostID
}

func summary(g Graph) string {
	return "tether: " + plural(len(g.Hosts), "host") + ", " + plural(len(g.Networks), "network") + ", " +
		plural(len(g.Sandboxes), "sandbox") + ", " + plural(len(g.Links), "link")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	if strings.HasSuffix(what, "x") {
		return itoa(n) + " " + what + "es"
	}
	return itoa(n) + " " + what + "s"
}

func addrSuffix(addr string) string {
	if addr == "" {
		return ""
	}
	return "\n" + addr
}

func sandboxLabel(s Sandbox) string {
	lines := []string{clean(s.Name)}
	for _, ep := range s.Endpoints {
		for _, p := range ep.Ports {
			lines = append(lines, p.String())
		}
	}
	return strings.Join(lines, "\n")
}

func endpointLabel(ep Endpoint) string {
	parts := append([]string{clean(ep.IfName)}, ep.Addresses...)
	return strings.TrimSpace(strings.Join(parts, " "))
}

func linkLabel(l Link) string {
	return clean(l.Name) + "\n" + clean(l.IfA) + " " + l.AddrA + " — " + clean(l.IfB) + " " + l.AddrB
}

// dotAttrs formats an attribute list; keys are the caller's constants,
// values are quoted (dotString).
func dotAttrs(kv ...string) string {
	var b strings.Builder
	b.WriteString(" [")
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv[i] + "=" + dotString(kv[i+1]))
	}
	b.WriteByte(']')
	return b.String()
}

// dotString quotes s as a DOT string: a quote and a backslash are escaped
// (so no value can end its string early or form one of Graphviz's label
// escapes such as \N or \G), a line break becomes \n, and what clean
// refuses is replaced.
func dotString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		default:
			b.WriteString(clean(string(r)))
		}
	}
	b.WriteByte('"')
	return b.String()
}

func itoa(i int) string { return strconv.Itoa(i) }
