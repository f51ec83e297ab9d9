package ipam

// Binary form of a Subnet. Version 1 holds IPv4 subnets, version 2 IPv6
// ones; all integers uvarint unless sized, A is the address length (4 in
// version 1, 16 in version 2):
//
//	"TIPM" 0x01 or 0x02
//	subnet: A-byte address, 1-byte length
//	ip-range: 1-byte length (0 = whole subnet), then A-byte address if set
//	gateway: A bytes
//	aux: count, then per name (sorted): length, name, A-byte address
//	version 2 only: window: 16-byte first address, number of addresses
//	cursor
//	bitmap: count of runs, then per run: zero words skipped, word count,
//	        words (8 bytes little-endian each)
//	version 2 only: extra: count, then 16-byte addresses, ascending
//
// The bitmap covers the whole subnet in version 1 and the allocation window
// in version 2 (see subnetState); the window is derived from the
// configuration and recorded so a record is refused, not misread, if that
// rule ever changes. Extra lists the taken addresses outside the window.
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

var (
	encMagic  = []byte("TIPM\x01")
	encMagic6 = []byte("TIPM\x02")
)

// MarshalBinary encodes the configuration, the bitmap and the next-fit
// cursor (version 1 for IPv4, 2 for IPv6: see the format above).
func (s *Subnet) MarshalBinary() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.st
	magic := encMagic
	if st.bitLen == 128 {
		magic = encMagic6
	}
	b := slices.Clone(magic)
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
	if st.bitLen == 128 {
		b = append(b, st.addr(0).AsSlice()...)
		b = binary.AppendUvarint(b, uint64(st.size))
	}
	b = binary.AppendUvarint(b, uint64(st.cursor))
	b = appendRuns(b, st.used)
	if st.bitLen == 128 {
		b = binary.AppendUvarint(b, uint64(len(st.extra)))
		for _, a := range st.extra {
			b = append(b, a.AsSlice()...)
		}
	}
	return b, nil
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
	d := decoder{b: data, alen: 4}
	magic := string(d.bytes(len(encMagic)))
	switch magic {
	case string(encMagic):
	case string(encMagic6):
		d.alen = 16
	default:
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
	var winBase netip.Addr
	var winSize uint64
	if d.alen == 16 {
		winBase, winSize = d.addr(), d.uvarint()
	}
	cursor := d.uvarint()
	if d.err != nil {
		return subnetState{}, d.err
	}
	st, err := newState(c)
	if err != nil {
		return subnetState{}, err
	}
	if st.bitLen != d.alen*8 {
		return subnetState{}, fmt.Errorf("%w: subnet %s in a version %d record", errCorrupt, c.Subnet, magic[4])
	}
	if d.alen == 16 && (winBase != st.addr(0) || winSize != uint64(st.size)) {
		return subnetState{}, fmt.Errorf("%w: window %s+%d does not match subnet %s", errCorrupt, winBase, winSize, c.Subnet)
	}
	if err := d.runs(st.used, st.size); err != nil {
		return subnetState{}, err
	}
	if d.alen == 16 {
		if err := d.extra(&st); err != nil {
			return subnetState{}, err
		}
	}
	if len(d.b) != 0 {
		return subnetState{}, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.b))
	}
	if cursor >= uint64(st.lo) && cursor < uint64(st.hi) {
		st.cursor = uint32(cursor)
	}
	st.recount()
	return st, nil
}

// extra reads the taken addresses outside the window: ascending, each a
// host address of the subnet that is neither fixed nor in the window.
func (d *decoder) extra(st *subnetState) error {
	n := d.count()
	for range n {
		a := d.addr()
		if d.err != nil {
			return d.err
		}
		_, inWindow := st.off(a)
		switch {
		case checkHost("ip", a.String(), a, st.cfg.Subnet) != nil || inWindow || st.isFixed(a):
			return fmt.Errorf("%w: extra address %s is not a host address outside the window", errCorrupt, a)
		case len(st.extra) > 0 && st.extra[len(st.extra)-1].Compare(a) >= 0:
			return fmt.Errorf("%w: extra addresses out of order", errCorrupt)
		}
		st.extra = append(st.extra, a)
	}
	return d.err
}

type decoder struct {
	b    []byte
	alen int // address length: 4 or 16
	err  error
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
	b := d.bytes(d.alen)
	if b == nil {
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
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
// a window of size addresses.
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
	if size%64 != 0 && bm[len(bm)-1]>>(size%64) != 0 {
		return fmt.Errorf("%w: bits set past the end of the subnet", errCorrupt)
	}
	return nil
}
