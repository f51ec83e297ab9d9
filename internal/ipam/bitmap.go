package ipam

import "math/bits"

// bitmap holds one bit per address offset in a subnet; 1 = taken.
type bitmap []uint64

func newBitmap(n uint32) bitmap { return make(bitmap, (n+63)/64) }

func (b bitmap) get(i uint32) bool { return b[i>>6]&(1<<(i&63)) != 0 }
func (b bitmap) set(i uint32)      { b[i>>6] |= 1 << (i & 63) }
func (b bitmap) clear(i uint32)    { b[i>>6] &^= 1 << (i & 63) }

// nextClear returns the first clear bit in [from, to). It looks at a word at
// a time, so a full stretch costs one comparison per 64 addresses.
func (b bitmap) nextClear(from, to uint32) (uint32, bool) {
	for from < to {
		w := from >> 6
		if free := ^b[w] >> (from & 63); free != 0 {
			i := from + uint32(bits.TrailingZeros64(free))
			return i, i < to
		}
		from = (w + 1) << 6
	}
	return 0, false
}

// countSet counts the set bits in [from, to).
func (b bitmap) countSet(from, to uint32) int {
	n := 0
	for from < to {
		w := from >> 6
		word := b[w] >> (from & 63)
		span := 64 - from&63
		if to-from < span {
			span = to - from
			word &= 1<<span - 1
		}
		n += bits.OnesCount64(word)
		from += span
	}
	return n
}
