package topology

import (
	"encoding/xml"
	"io"
	"strings"
)

// The SVG picture is laid out as a bus diagram, computed here so the output
// depends on nothing but the graph:
//
//	title
//	┌ host ─────────────┐ ┌ other host ┐
//	│  link lanes       │ │            │
//	│ [sb] [sb] [sb]    │ │ [peer]     │
//	└──┼────┼────┼──────┘ └──┼─────────┘
//	net1 ━━●━━━━●━━━━━━━━━━━━━━━━━━━━━━━
//	net2 ━━━━━━━━━━━━●━━━━━━━●━━━━━━━━━━
//
// Each network is a horizontal bus with its name and addressing on the
// left; each sandbox a box in its host's frame, one column per sandbox,
// with a vertical line down to every bus it is attached to (a dot on the
// bus, its address beside it) and its published ports inside the box.
// Point-to-point links run in lanes above the boxes. Overlay peers (remote
// sandboxes) are dashed boxes in their host's dashed frame.
const (
	margin   = 16
	labelW   = 250 // the networks' label column
	colW     = 176 // one sandbox column
	boxGap   = 14  // between two boxes of a host
	hostPad  = 10
	hostGap  = 16
	titleH   = 34
	hostHead = 30 // the host's name line
	laneH    = 16 // one link lane
	rowH     = 52 // one network bus
	epStep   = 12 // between two endpoint lines of a sandbox
)

// svgLayout holds the positions the writer needs.
type svgLayout struct {
	g            Graph
	hostX, hostW []int
	sbX          map[string]int // box x by sbKey
	netY         map[string]int // bus y by network ID
	linkTop      int
	boxTop, boxH int
	hostBottom   int
	width, h     int
}

func layout(g Graph) *svgLayout {
	l := &svgLayout{g: g, sbX: map[string]int{}, netY: map[string]int{}}
	ports := 0
	for _, s := range g.Sandboxes {
		ports = max(ports, len(portsOf(s)))
	}
	l.linkTop = margin + titleH + hostHead
	l.boxTop = l.linkTop + len(g.Links)*laneH
	if len(g.Links) > 0 {
		l.boxTop += 10
	}
	l.boxH = 44 + 14*ports
	l.hostBottom = l.boxTop + l.boxH + hostPad
	x := margin + labelW
	for _, h := range g.Hosts {
		cols := 0
		for _, s := range g.Sandboxes {
			if s.Host == h.ID {
				l.sbX[sbKey(s)] = x + hostPad + cols*colW
				cols++
			}
		}
		w := 2*hostPad + max(cols, 1)*colW - boxGap
		l.hostX, l.hostW = append(l.hostX, x), append(l.hostW, w)
		x += w + hostGap
	}
	l.width = max(x-hostGap+margin, margin+labelW+200)
	busTop := l.hostBottom + 40
	for i, n := range g.Networks {
		l.netY[n.ID] = busTop + i*rowH
	}
	l.h = busTop + max(len(g.Networks)-1, 0)*rowH + 30
	return l
}

func portsOf(s Sandbox) []Port {
	var out []Port
	for _, ep := range s.Endpoints {
		out = append(out, ep.Ports...)
	}
	return out
}

// SVG writes g as a standalone SVG document (the layout above). Every
// string from the graph is XML-escaped; names longer than a box are cut
// (the full name is in the element's <title>, a tooltip). Elements carry
// data-* attributes naming what they draw: data-host, data-network,
// data-sandbox (with data-remote on overlay peers), data-link, data-port.
func SVG(w io.Writer, g Graph) error {
	l := layout(g)
	var b svgBuilder
	b.open("svg", "xmlns", "http://www.w3.org/2000/svg", "class", "tether-topology", "width", itoa(l.width),
		"height", itoa(l.h), "viewBox", "0 0 "+itoa(l.width)+" "+itoa(l.h), "font-family", "sans-serif",
		"font-size", "11", "role", "img", "aria-label", summary(g))
	b.leaf("title", nil, summary(g))
	b.leaf("rect", []string{"width", "100%", "height", "100%", "fill", "#ffffff"}, "")
	b.leaf("text", []string{"class", "summary", "x", itoa(margin), "y", itoa(margin + 16), "font-size", "15", "font-weight", "bold"}, summary(g))
	l.hosts(&b)
	l.networks(&b)
	l.sandboxes(&b)
	l.links(&b)
	b.close("svg")
	_, err := io.WriteString(w, b.String())
	return err
}

func (l *svgLayout) hosts(b *svgBuilder) {
	top := margin + titleH
	for i, h := range l.g.Hosts {
		stroke, dash := "#666666", ""
		if !h.Self {
			dash = "6 4"
		}
		if !h.Live {
			stroke = "#c0392b"
		}
		b.open("g", "class", "host", "data-host", h.ID, "data-name", h.Name)
		b.leaf("title", nil, hostLabel(h)+addrSuffix(h.Addr))
		b.leaf("rect", []string{"x", itoa(l.hostX[i]), "y", itoa(top), "width", itoa(l.hostW[i]), "height", itoa(l.hostBottom - top),
			"rx", "8", "fill", "#fafafa", "stroke", stroke, "stroke-dasharray", dash}, "")
		label := short(hostLabel(h), 40)
		if h.Addr != "" {
			label += "  " + h.Addr
		}
		b.leaf("text", []string{"x", itoa(l.hostX[i] + hostPad), "y", itoa(top + 20), "font-weight", "bold", "fill", stroke}, label)
		b.close("g")
	}
}

func (l *svgLayout) networks(b *svgBuilder) {
	for _, n := range l.g.Networks {
		y, c := l.netY[n.ID], driverColor(n.Driver)
		b.open("g", "class", "network", "data-network", n.Name, "data-id", n.ID, "data-driver", n.Driver)
		b.leaf("title", nil, n.Name+"\n"+netDetail(n))
		b.leaf("line", []string{"x1", itoa(margin + labelW - 12), "y1", itoa(y), "x2", itoa(l.width - margin), "y2", itoa(y),
			"stroke", c, "stroke-width", "4", "stroke-linecap", "round"}, "")
		b.leaf("text", []string{"x", itoa(margin), "y", itoa(y - 4), "font-weight", "bold", "font-size", "12", "fill", c}, short(n.Name, 28))
		b.leaf("text", []string{"x", itoa(margin), "y", itoa(y + 12), "font-size", "10", "fill", "#444444"}, short(netDetail(n), 44))
		b.close("g")
	}
}

func (l *svgLayout) sandboxes(b *svgBuilder) {
	for _, s := range l.g.Sandboxes {
		x := l.sbX[sbKey(s)]
		attrs := []string{"class", "sandbox", "data-sandbox", s.Name, "data-id", s.ID, "data-host", s.Host}
		if s.Remote {
			attrs = append(attrs, "data-remote", "true")
		}
		b.open("g", attrs...)
		b.leaf("title", nil, s.Name)
		l.endpoints(b, s, x)
		dash, fill := "", "#eef4fb"
		if s.Remote {
			dash, fill = "5 3", "#f5effa"
		}
		b.leaf("rect", []string{"x", itoa(x), "y", itoa(l.boxTop), "width", itoa(colW - boxGap), "height", itoa(l.boxH),
			"rx", "5", "fill", fill, "stroke", "#34495e", "stroke-dasharray", dash}, "")
		b.leaf("text", []string{"x", itoa(x + 8), "y", itoa(l.boxTop + 18), "font-weight", "bold", "font-size", "12"}, short(s.Name, 20))
		sub := short(s.ID, 12)
		if s.Remote {
			sub = "peer " + sub
		}
		b.leaf("text", []string{"x", itoa(x + 8), "y", itoa(l.boxTop + 33), "font-size", "9", "fill", "#777777"}, sub)
		for i, p := range portsOf(s) {
			b.leaf("text", []string{"class", "port", "data-port", p.String(), "x", itoa(x + 8), "y", itoa(l.boxTop + 47 + 14*i),
				"font-size", "10", "fill", "#8e4400"}, "⇄ "+p.String())
		}
		b.close("g")
	}
}

// endpoints draws a sandbox's lines down to its buses: the line to the
// highest bus rightmost, so each address (written right of its line, above
// its bus) crosses none of the sandbox's other lines.
func (l *svgLayout) endpoints(b *svgBuilder, s Sandbox, x int) {
	var eps []Endpoint
	for _, ep := range s.Endpoints {
		if _, ok := l.netY[ep.Network]; ok {
			eps = append(eps, ep)
		}
	}
	for k, ep := range eps {
		ex := x + 14 + (len(eps)-1-k)*epStep
		y := l.netY[ep.Network]
		b.open("g", "class", "endpoint", "data-sandbox", s.Name, "data-network", l.netName(ep.Network))
		b.leaf("line", []string{"x1", itoa(ex), "y1", itoa(l.boxTop + l.boxH), "x2", itoa(ex), "y2", itoa(y), "stroke", "#34495e", "stroke-width", "1.5"}, "")
		b.leaf("circle", []string{"cx", itoa(ex), "cy", itoa(y), "r", "4.5", "fill", "#34495e"}, "")
		b.leaf("text", []string{"x", itoa(ex + 6), "y", itoa(y - 6), "font-size", "9", "fill", "#222222"}, endpointLabel(ep))
		b.close("g")
	}
}

func (l *svgLayout) netName(id string) string {
	for _, n := range l.g.Networks {
		if n.ID == id {
			return n.Name
		}
	}
	return ""
}

// links draws each link in its own lane: up from the top of one box,
// across, and down to the other.
func (l *svgLayout) links(b *svgBuilder) {
	self := selfID(l.g)
	for i, k := range l.g.Links {
		xa, oka := l.sbX[self+"/"+k.A]
		xb, okb := l.sbX[self+"/"+k.B]
		if !oka || !okb {
			continue
		}
		off := 40 + (i%4)*10
		xa, xb = xa+off, xb+off
		y := l.linkTop + i*laneH + 8
		d := "M" + itoa(xa) + " " + itoa(l.boxTop) + " V" + itoa(y) + " H" + itoa(xb) + " V" + itoa(l.boxTop)
		b.open("g", "class", "link", "data-link", k.Name, "data-id", k.ID, "data-a", k.A, "data-b", k.B)
		b.leaf("title", nil, linkLabel(k))
		b.leaf("path", []string{"d", d, "fill", "none", "stroke", linkColor, "stroke-width", "1.5", "stroke-dasharray", "4 3"}, "")
		b.leaf("text", []string{"x", itoa((xa + xb) / 2), "y", itoa(y - 3), "text-anchor", "middle", "font-size", "9", "fill", linkColor},
			short(k.Name, 24)+"  "+k.AddrA+" ↔ "+k.AddrB)
		b.close("g")
	}
}

// svgBuilder writes elements; every attribute value and text passes
// through clean and XML escaping, attribute names are the caller's
// constants. An empty attribute value is left out.
type svgBuilder struct{ strings.Builder }

func (b *svgBuilder) open(tag string, attrs ...string) {
	b.WriteString("<" + tag)
	b.attrs(attrs)
	b.WriteString(">\n")
}

func (b *svgBuilder) close(tag string) { b.WriteString("</" + tag + ">\n") }

// leaf writes an element with text content (or none: self-closed).
func (b *svgBuilder) leaf(tag string, attrs []string, text string) {
	b.WriteString("<" + tag)
	b.attrs(attrs)
	if text == "" {
		b.WriteString("/>\n")
		return
	}
	b.WriteString(">")
	b.escape(text)
	b.WriteString("</" + tag + ">\n")
}

func (b *svgBuilder) attrs(kv []string) {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		b.WriteString(" " + kv[i] + `="`)
		b.escape(kv[i+1])
		b.WriteByte('"')
	}
}

// escape writes s with &, <, >, quotes and line breaks escaped
// (xml.EscapeText, which also replaces characters XML cannot hold).
func (b *svgBuilder) escape(s string) {
	lines := strings.Split(s, "\n") // our own line breaks (titles) stay line breaks
	for i, line := range lines {
		if i > 0 {
			b.WriteString("&#xA;")
		}
		_ = xml.EscapeText(b, []byte(clean(line)))
	}
}
