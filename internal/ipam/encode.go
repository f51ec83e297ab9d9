package ipam

// Binary form of a Subnet, version 1, all integers uvarint unless sized:
//
//	"TIPM" 0x01
//	subnet: 4-byte address, 1-byte length
//	ip-range: 1-byte length (0 = whole subnet), then 4-byte address if set
//	gateway: 4 bytes
//	aux: count, then per name (sorted): length, name, 4-byte address
//	cursor
//	bitmap: count of runs, then per run: zero words skipped, word count,
//	        words (8 bytes little-endian each)
//
// Runs of empty words cost two bytes, so a fresh /8 is a few bytes, and a
// full /16 is 8 KiB.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

var encMagic = []byte("TIPM\x01")

// MarshalBinary encodes the configuration, the bitmap and the next-fit cursor.
func (s *Subnet) MarshalBinary() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.st
	b := slices.Clone(encMagic)
	b = appendPrefix(b, st.cfg.Subnet)
	if st.cfg.IPRange.IsValid() {
		b = appendPrefix(b, st.cfg.IPRange)
	} else {
		b = append(b, 0)
	}
	b = append(b, st.cfg.Gateway.AsSlice()...)
	b = binary.AppendUvarint(b, uint64(len(st.cfg.Aux)))
	for _, name := range slices.Sorted(maps.Keys(st.cfg.Aux)) {
		b = binary.AppendUvarint(b, uint64(len(name)))
		b = append(b, name...)
		b = append(b, st.cfg.Aux[name].AsSlice()...)
	}
	b = binary.AppendUvarint(b, uint64(st.cursor))
	return appendRuns(b, st.used), nil
}

func appendPrefix(b []byte, p netip.Prefix) []byte {
	b = append(b, p.Addr().AsSlice()...)
	return append(b, byte(p.Bits()))
}

// appendRuns writes the bitmap as runs of non-zero words.
func appendRuns(b []byte, bm bitmap) []byte {
	type run struct{ skip, start, n int }
	var runs []run
	last := 0
	for i := 0; i < len(bm); {
		if bm[i] == 0 {
			i++
			continue
		}
		j := i
		for j < len(bm) && bm[j] != 0 {
			j++
		}
		runs = append(runs, run{skip: i - last, start: i, n: j - i})
		last, i = j, j
	}
	b = binary.AppendUvarint(b, uint64(len(runs)))
	for _, r := range runs {
		b = binary.AppendUvarint(b, uint64(r.skip))
		b = binary.AppendUvarint(b, uint64(r.n))
		for _, w := range bm[r.start : r.start+r.n] {
			b = binary.LittleEndian.AppendUint64(b, w)
		}
	}
	return b
}

var errCorrupt = errors.New("corrupt subnet record")

// UnmarshalBinary replaces s with the decoded subnet. The configuration is
// validated as by NewSubnet; a bitmap with bits beyond the subnet is refused.
func (s *Subnet) UnmarshalBinary(data []byte) error {
	st, err := decode(data)
	if err != nil {
		return fmt.Errorf("decode subnet: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st = st
	return nil
}

func decode(data []byte) (subnetState, error) {
	d := decoder{b: data}
	if string(d.bytes(len(encMagic))) != string(encMagic) {
		return subnetState{}, fmt.Errorf("%w: unknown format or version", errCorrupt)
	}
	var c SubnetConfig
	c.Subnet = d.prefix()
	if d.ok() && d.b[0] == 0 {
		d.bytes(1)
	} else {
		c.IPRange = d.prefix()
	}
	c.Gateway = d.addr()
	if n := d.count(); n > 0 {
		c.Aux = make(map[string]netip.Addr)
		for range n {
			name := string(d.bytes(int(d.uvarint())))
			c.Aux[name] = d.addr()
		}
	}
	cursor := d.uvarint()
	if d.err != nil {
		return subnetState{}, d.err
	}
	st, err := newState(c)
	if err != nil {
		return subnetState{}, err
	}
	if err := d.runs(st.used, st.size); err != nil {
		return subnetState{}, err
	}
	if cursor >= uint64(st.lo) && cursor < uint64(st.hi) {
		st.cursor = uint32(cursor)
	}
	st.recount()
	return st, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) ok() bool { return d.err == nil && len(d.b) > 0 }

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n < 0 || n > len(d.b) {
		d.err = fmt.Errorf("%w: truncated", errCorrupt)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad varint", errCorrupt)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a number of entries; each takes at least one byte, so a count
// above the bytes left is corrupt (and never sizes a loop or a map).
func (d *decoder) count() int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: count %d exceeds data", errCorrupt, n)
	}
	if d.err != nil {
		return 0
	}
	return int(n)
}

func (d *decoder) addr() netip.Addr {
	b := d.bytes(4)
	if b == nil {
		return netip.Addr{}
	}
	return netip.AddrFrom4([4]byte(b))
}

func (d *decoder) prefix() netip.Prefix {
	a := d.addr()
	bits := d.bytes(1)
	if bits == nil {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, int(bits[0]))
}

// runs ORs the encoded words into bm, which already holds the fixed bits of
// a subnet of size addresses.
func (d *decoder) runs(bm bitmap, size uint32) error {
	n := d.count()
	pos := uint64(0)
	for range n {
		pos += d.uvarint()
		cnt := d.uvarint()
		if d.err != nil {
			return d.err
		}
		if pos > uint64(len(bm)) || cnt > uint64(len(bm))-pos {
			return fmt.Errorf("%w: bitmap longer than the subnet", errCorrupt)
		}
		for i := range cnt {
			w := d.bytes(8)
			if w == nil {
				return d.err
			}
			bm[pos+i] |= binary.LittleEndian.Uint64(w)
		}
		pos += cnt
	}
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.b))
	}
	if size%64 != 0 && bm[len(bm)-1]>>(size%64) != 0 {
		return fmt.Errorf("%w: bits set past the end of the subnet", errCorrupt)
	}
	return nil
}
