package topology

import (
	"bytes"
	"encoding/xml"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// hostile are names a user (or another cluster host, through the store)
// could give, each aimed at one of the renderers' escapes.
var hostile = []string{
	`a"];evil [label="x`,        // ends a DOT string and starts a node
	`b\"} subgraph x {`,         // a backslash before the quote
	"c\nd -- e",                 // a line break
	`<script>alert(1)</script>`, // markup
	`f" onload="alert(1)`,       // ends an XML attribute
	"g&amp;\u202eh\u200bi",      // an entity, a bidi override, a zero-width space
	"j\xff\x00k",                // invalid UTF-8 and NUL
	`\N\G\L`,                    // Graphviz label escapes
	`]]><!-- ' -->`,             // CDATA end, comment, apostrophe
}

// renamed is the fixture with every name made hostile: the old name, a
// space (so the drawing order stays), and one of the hostile strings. The
// same old name gets the same new one.
func renamed() (Input, []string) {
	in := fixture()
	memo := map[string]string{}
	var names []string
	next := func(old string) string {
		if s, ok := memo[old]; ok {
			return s
		}
		s := old + " " + hostile[len(names)%len(hostile)]
		memo[old] = s
		names = append(names, s)
		return s
	}
	in.Self.Name = next(in.Self.Name)
	for i := range in.Nodes {
		in.Nodes[i].Name = next(in.Nodes[i].Name)
	}
	for _, n := range in.Networks {
		n.Name = next(n.Name)
		for i := range n.Remote {
			n.Remote[i].NodeName = next(n.Remote[i].NodeName)
			n.Remote[i].SandboxName = next(n.Remote[i].SandboxName)
		}
	}
	for _, s := range in.Sandboxes {
		s.Name = next(s.Name)
		for _, ep := range s.Endpoints {
			ep.IfName = next(ep.IfName)
		}
	}
	for _, l := range in.Links {
		l.Name, l.IfA, l.IfB = next(l.Name), next(l.IfA), next(l.IfB)
	}
	// what Build leaves out: the endpoint on a network not listed, the
	// link to a sandbox not listed
	names = slices.DeleteFunc(names, func(n string) bool {
		return strings.HasPrefix(n, "eth2 ") || strings.HasPrefix(n, "dangling ")
	})
	return in, names
}

func render(t *testing.T, fn func(io.Writer, Graph) error, in Input) string {
	t.Helper()
	var b bytes.Buffer
	if err := fn(&b, Build(in)); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

var dotQuoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// TestDOTEscaping: whatever the names, the DOT text has the same statements
// (the same text outside quoted strings) as with plain names, and its quoted
// strings hold the names.
func TestDOTEscaping(t *testing.T) {
	in, names := renamed()
	plain := render(t, DOT, fixture())
	evil := render(t, DOT, in)
	skeleton := func(s string) string { return dotQuoted.ReplaceAllString(s, `""`) }
	if skeleton(evil) != skeleton(plain) {
		t.Fatalf("hostile names changed the DOT statements:\n%s\nwant the shape of\n%s", evil, plain)
	}
	var strs []string
	for _, q := range dotQuoted.FindAllString(evil, -1) {
		strs = append(strs, dotUnquote(q))
	}
	joined := strings.Join(strs, "\x00")
	for _, n := range names {
		if want := clean(n); !strings.Contains(joined, want) {
			t.Errorf("no DOT string holds %q (as %q)", n, want)
		}
	}
}

// dotUnquote reverses dotString (\" and \\ and \n), failing on any other
// escape: dotString writes none.
func dotUnquote(q string) string {
	var b strings.Builder
	s := q[1 : len(q)-1]
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case '"', '\\':
			b.WriteByte(s[i])
		case 'n':
			b.WriteByte('\n')
		default:
			panic("unexpected escape \\" + string(s[i]) + " in " + q)
		}
	}
	return b.String()
}

func TestDOTString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", `"plain"`},
		{`a"b`, `"a\"b"`},
		{`a\b`, `"a\\b"`},
		{`\N`, `"\\N"`},
		{"a\nb", `"a\nb"`},
		{"a\rb\tc", `"a` + "\uFFFD" + `b` + "\uFFFD" + `c"`},
		{"x\u202ey", "\"x\uFFFDy\""},
		{"\xff", "\"\uFFFD\""},
		{"ünï 名", `"ünï 名"`},
	}
	for _, tt := range tests {
		if got := dotString(tt.in); got != tt.want {
			t.Errorf("dotString(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestDOT(t *testing.T) {
	out := render(t, DOT, fixture())
	for _, want := range []string{
		"graph \"tether\" {\n",
		`label="tether: 4 hosts, 4 networks, 4 sandboxes, 1 link"`,
		`n2 [label="front\nbridge · 10.1.0.0/24" shape="ellipse"`,
		`n3 [label="lan\nmacvlan · 192.168.5.0/24 · fd00:5::/64 · internal"`,
		`graph [label="h1 (this host)\n192.0.2.1" style="solid"];`,
		`graph [label="h3 (down)\n192.0.2.3" style="dashed"];`,
		`s1 [label="web\n0.0.0.0:5353->53/udp\n127.0.0.1:8080->80/tcp" shape="box" style="solid"];`,
		`s2 [label="api" shape="box" style="dashed"];`,
		`h3 [label="(no sandboxes)" shape="plaintext"];`,
		`s1 -- n0 [label="eth1 10.9.0.2/24"];`,
		`s2 -- n1 [label="10.10.0.2/24"];`,
		`s1 -- s0 [label="web-db\np2p0 169.254.0.0/32 — p2p0 169.254.0.1/32" style="dashed"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("DOT lacks %s\n%s", want, out)
		}
	}
	if again := render(t, DOT, fixture()); again != out {
		t.Error("two renderings of the same graph differ")
	}
}

// svgElement is an element of a rendered SVG with its attributes and the
// text directly inside it.
type svgElement struct {
	name  string
	attrs map[string]string
	text  string
}

// parseSVG reads an SVG strictly (a well-formedness check) into its
// elements in document order.
func parseSVG(t *testing.T, s string) []*svgElement {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(s))
	var out, stack []*svgElement
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, s)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			e := &svgElement{name: tok.Name.Local, attrs: map[string]string{}}
			for _, a := range tok.Attr {
				e.attrs[a.Name.Local] = a.Value
			}
			out, stack = append(out, e), append(stack, e)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text += string(tok)
			}
		case xml.ProcInst, xml.Directive, xml.Comment:
			t.Fatalf("unexpected %T in SVG", tok)
		}
	}
	return out
}

// shape is the element and attribute names in order: what must not depend
// on names.
func shape(els []*svgElement) string {
	var b strings.Builder
	for _, e := range els {
		b.WriteString(e.name)
		var keys []string
		for k := range e.attrs {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.WriteString("(" + strings.Join(keys, ",") + ") ")
	}
	return b.String()
}

func TestSVGEscaping(t *testing.T) {
	in, names := renamed()
	plain := parseSVG(t, render(t, SVG, fixture()))
	evil := parseSVG(t, render(t, SVG, in))
	if shape(evil) != shape(plain) {
		t.Fatalf("hostile names changed the SVG's elements:\n%s\nwant\n%s", shape(evil), shape(plain))
	}
	var texts []string
	for _, e := range evil {
		if e.name == "script" || e.name == "foreignObject" {
			t.Errorf("SVG has a %s element", e.name)
		}
		for k, v := range e.attrs {
			if strings.HasPrefix(strings.ToLower(k), "on") || strings.Contains(k, "href") {
				t.Errorf("SVG has attribute %s=%q", k, v)
			}
			texts = append(texts, v)
		}
		texts = append(texts, e.text)
	}
	// Every name is there in full (titles and data attributes are not cut).
	joined := strings.Join(texts, "\x00")
	for _, n := range names {
		if !strings.Contains(joined, clean(n)) {
			t.Errorf("SVG holds %q nowhere (as %q)", n, clean(n))
		}
	}
}

func TestSVG(t *testing.T) {
	out := render(t, SVG, fixture())
	els := parseSVG(t, out)
	if els[0].name != "svg" || els[0].attrs["xmlns"] != "http://www.w3.org/2000/svg" {
		t.Fatalf("root %+v", els[0])
	}
	got := map[string][]string{}
	for _, e := range els {
		for _, k := range []string{"data-host", "data-network", "data-link", "data-port"} {
			if v, ok := e.attrs[k]; ok && e.attrs["class"] != "endpoint" && e.attrs["class"] != "sandbox" {
				got[k] = append(got[k], v)
			}
		}
		switch e.attrs["class"] {
		case "sandbox":
			got["sandbox"] = append(got["sandbox"], e.attrs["data-host"]+"/"+e.attrs["data-sandbox"]+"/"+e.attrs["data-remote"])
		case "endpoint":
			got["endpoint"] = append(got["endpoint"], e.attrs["data-sandbox"]+"@"+e.attrs["data-network"])
		}
	}
	tests := []struct {
		key  string
		want []string
	}{
		{"data-host", []string{"node1", "node2", "node3", "node4"}},
		{"data-network", []string{"back", "back2", "front", "lan"}},
		{"sandbox", []string{"node1/db/", "node1/web/", "node2/api/true", "node3/old/true"}},
		{"endpoint", []string{"db@front", "web@back", "web@front", "api@back", "api@back2", "old@back"}},
		{"data-link", []string{"web-db"}},
		{"data-port", []string{"0.0.0.0:5353->53/udp", "127.0.0.1:8080->80/tcp"}},
	}
	for _, tt := range tests {
		if !slices.Equal(got[tt.key], tt.want) {
			t.Errorf("%s: %q, want %q", tt.key, got[tt.key], tt.want)
		}
	}
	if again := render(t, SVG, fixture()); again != out {
		t.Error("two renderings of the same graph differ")
	}
}

// Long names are cut on the picture, with the whole name in the title.
func TestSVGLongName(t *testing.T) {
	in := fixture()
	long := strings.Repeat("ü", 60)
	in.Sandboxes[0].Name = long
	els := parseSVG(t, render(t, SVG, in))
	var title, shown bool
	for i, e := range els {
		if e.attrs["data-sandbox"] == long && e.attrs["class"] == "sandbox" {
			title = els[i+1].name == "title" && els[i+1].text == long
		}
		if e.name == "text" && e.text == strings.Repeat("ü", 19)+"…" {
			shown = true
		}
	}
	if !title || !shown {
		t.Errorf("title %v, cut name shown %v", title, shown)
	}
}

func TestShort(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 3, "abc"},
		{"abcd", 3, "ab…"},
		{"名前名前", 3, "名前…"},
		{"a\nb", 5, "a\uFFFDb"},
	}
	for _, tt := range tests {
		if got := short(tt.in, tt.n); got != tt.want {
			t.Errorf("short(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
