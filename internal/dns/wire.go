package dns

// Local answers straight from the wire. Nearly every query a sandbox sends
// is "A (or AAAA) of a name on my network": one question, class IN, no
// records but maybe an empty OPT. For that shape the resolver reads the
// header and the question from the datagram, looks the name up in the Table
// and writes the answer after a copy of the question (answer names are a
// pointer to it), in buffers owned by the event loop: no message is
// decoded, no allocation is made. Anything else (another shape, a label
// with a byte outside [A-Za-z0-9_-], a name not local, a PTR, an answer
// that would need truncation) goes through the library (miekg/dns) exactly
// as before, so the two paths answer alike (wire_test.go compares them).

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"

	mdns "github.com/miekg/dns"
)

const (
	headerLen   = 12
	flagQR      = 1 << 15
	flagAA      = 1 << 10
	flagRD      = 1 << 8
	flagRA      = 1 << 7
	flagCD      = 1 << 4
	maskOpcode  = 0xf << 11
	typeOPT     = 41
	classIN     = 1
	maxNameWire = 255
)

// wireQuery is a query of the fast path's shape, read from a datagram.
type wireQuery struct {
	id, flags uint16
	qEnd      int    // end of the question section
	key       []byte // the name lower-case, without the final dot
	qtype     uint16
	edns      bool
	size      int // largest answer the client takes over UDP
}

// parseQuery reads b as a standard query with one IN question and at most
// an OPT record with no options, writing the lower-case name into key's
// storage. ok is false for anything else.
func parseQuery(b []byte, key []byte) (q wireQuery, ok bool) {
	if len(b) < headerLen {
		return q, false
	}
	q.id = binary.BigEndian.Uint16(b)
	q.flags = binary.BigEndian.Uint16(b[2:])
	qd, an, ns, ar := binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]), binary.BigEndian.Uint16(b[8:]), binary.BigEndian.Uint16(b[10:])
	if q.flags&(flagQR|maskOpcode) != 0 || qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return q, false
	}
	off, key, ok := readName(b, headerLen, key[:0])
	if !ok || len(key) == 0 || off+4 > len(b) {
		return q, false
	}
	q.key = key
	q.qtype = binary.BigEndian.Uint16(b[off:])
	if binary.BigEndian.Uint16(b[off+2:]) != classIN {
		return q, false
	}
	q.qEnd = off + 4
	q.size = minUDPSize
	if ar == 1 {
		// root name, TYPE OPT, CLASS = UDP size, TTL, RDLENGTH 0
		o := q.qEnd
		if len(b) != o+11 || b[o] != 0 || binary.BigEndian.Uint16(b[o+1:]) != typeOPT || binary.BigEndian.Uint16(b[o+9:]) != 0 {
			return q, false
		}
		q.edns = true
		q.size = min(max(int(binary.BigEndian.Uint16(b[o+3:])), minUDPSize), udpBufSize)
	} else if len(b) != q.qEnd {
		return q, false
	}
	return q, true
}

// minUDPSize is the UDP answer size of a client without EDNS0.
const minUDPSize = 512

// readName reads an uncompressed name at off, appending its labels
// lower-case and dot-separated to key; false for a pointer, an overlong
// name or a byte the library would escape.
func readName(b []byte, off int, key []byte) (int, []byte, bool) {
	start := off
	for {
		if off >= len(b) {
			return 0, nil, false
		}
		l := int(b[off])
		off++
		if l == 0 {
			return off, key, off-start <= maxNameWire
		}
		if l > 63 || off+l > len(b) {
			return 0, nil, false
		}
		if len(key) > 0 {
			key = append(key, '.')
		}
		for _, c := range b[off : off+l] {
			switch {
			case c >= 'A' && c <= 'Z':
				c += 'a' - 'A'
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			default:
				return 0, nil, false
			}
			key = append(key, c)
		}
		off += l
	}
}

// wireScratch is what one event loop looks names up with: reused for
// every query it serves.
type wireScratch struct {
	key   [maxNameWire]byte
	addrs []netip.Addr
}

// localWire appends to out the answer to query b of client c from the
// table when the name is local to c (A, AAAA or NODATA; not PTR), the
// answer fits the client's UDP size and c is a sandbox. ok false: the
// library path answers.
func (r *Resolver) localWire(c *client, b []byte, s *wireScratch, out []byte) ([]byte, bool) {
	if c.host || c.allow != nil {
		return nil, false
	}
	q, ok := parseQuery(b, s.key[:])
	if !ok || q.qtype == typePTR {
		return nil, false
	}
	var known bool
	s.addrs, known = r.table.appendLookup(s.addrs[:0], c.id, q.key)
	if !known {
		return nil, false
	}
	return r.packLocal(b, &q, s.addrs, out)
}

const (
	typeA    = 1
	typePTR  = 12
	typeAAAA = 28
)

// packLocal writes the answer to q (whose packet is b) with the addresses
// of the family asked for, shuffled; false when it would not fit q.size.
func (r *Resolver) packLocal(b []byte, q *wireQuery, addrs []netip.Addr, out []byte) ([]byte, bool) {
	n := 0
	for _, a := range addrs {
		if q.qtype == typeA && a.Is4() || q.qtype == typeAAAA && a.Is6() && !a.Is4In6() {
			addrs[n] = a
			n++
		}
	}
	addrs = addrs[:n]
	for i := len(addrs) - 1; i > 0; i-- {
		j := rand.IntN(i + 1)
		addrs[i], addrs[j] = addrs[j], addrs[i]
	}
	out = append(out, b[:q.qEnd]...)
	binary.BigEndian.PutUint16(out[2:], flagQR|flagAA|flagRA|q.flags&(flagRD|flagCD))
	binary.BigEndian.PutUint16(out[6:], uint16(n))
	binary.BigEndian.PutUint16(out[8:], 0)
	binary.BigEndian.PutUint16(out[10:], 0)
	for _, a := range addrs {
		out = append(out, 0xc0, headerLen) // the question's name
		out = binary.BigEndian.AppendUint16(out, q.qtype)
		out = binary.BigEndian.AppendUint16(out, classIN)
		out = binary.BigEndian.AppendUint32(out, r.cfg.TTL)
		if a.Is4() {
			v := a.As4()
			out = binary.BigEndian.AppendUint16(out, 4)
			out = append(out, v[:]...)
		} else {
			v := a.As16()
			out = binary.BigEndian.AppendUint16(out, 16)
			out = append(out, v[:]...)
		}
	}
	if q.edns { // as truncate() does for the library path: an OPT with the size used
		binary.BigEndian.PutUint16(out[10:], 1)
		out = append(out, 0, 0, typeOPT)
		out = binary.BigEndian.AppendUint16(out, uint16(q.size))
		out = append(out, 0, 0, 0, 0, 0, 0)
	}
	if len(out) > q.size {
		return nil, false
	}
	return out, true
}

// decode reads a query as the library's server does (miekg/dns
// serveDNS): shorter than a header or a response: ignored (nil, nil: any
// reply can be used to amplify); a header the library rejects, or a body
// that does not decode: FORMERR (NOTIMP for an opcode other than QUERY and
// NOTIFY) with no records, as reject.
func decode(b []byte) (req, reject *mdns.Msg) {
	if len(b) < headerLen {
		return nil, nil
	}
	dh := mdns.Header{Id: binary.BigEndian.Uint16(b), Bits: binary.BigEndian.Uint16(b[2:]),
		Qdcount: binary.BigEndian.Uint16(b[4:]), Ancount: binary.BigEndian.Uint16(b[6:]),
		Nscount: binary.BigEndian.Uint16(b[8:]), Arcount: binary.BigEndian.Uint16(b[10:])}
	m := new(mdns.Msg)
	action := mdns.DefaultMsgAcceptFunc(dh)
	switch action {
	case mdns.MsgIgnore:
		return nil, nil
	case mdns.MsgAccept:
		if err := m.Unpack(b); err == nil {
			return m, nil
		}
	default: // the header's ID and bits, no section read
		var h [headerLen]byte
		copy(h[:], b[:4])
		_ = m.Unpack(h[:])
	}
	opcode := m.Opcode
	m.SetRcodeFormatError(m)
	m.Zero = false
	if action == mdns.MsgRejectNotImplemented {
		m.Opcode, m.Rcode = opcode, mdns.RcodeNotImplemented
	}
	m.Ns, m.Answer, m.Extra = nil, nil, nil
	return nil, m
}
