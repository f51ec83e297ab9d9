// Package stats is the one median and percentile of Tether's benchmarks
// and their tests (bench/..., the firewall's kernel benchmark, the overlay
// harness), so every report computes a figure the same way.
//
// Median is the usual one: the middle value of the sorted samples, or the
// mean of the two middle ones for an even count. (Before this package some
// copies took the upper middle value for an even count; the benchmarks'
// default repetition counts are odd, where all agree.) Percentile is the
// nearest-rank percentile, which is always one of the samples: p50 of an
// even count is the lower middle value, so a report's p50 and its median
// may differ for even counts; that is the definition each names.
package stats

import (
	"cmp"
	"slices"
)

// Number is what Median averages: integers (time.Duration among them) and
// floats.
type Number interface {
	~int | ~int32 | ~int64 | ~uint32 | ~uint64 | ~float32 | ~float64
}

// Median of v (not changed; copied and sorted). Zero for no samples. For
// an even count of integers the mean of the middle two is rounded down
// (toward the lower one); it cannot overflow.
func Median[T Number](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return s[n/2-1] + (s[n/2]-s[n/2-1])/2
}

// MedianOf is the Median of f over the elements of v (a field of each
// result, say).
func MedianOf[E any, T Number](v []E, f func(E) T) T {
	xs := make([]T, len(v))
	for i, e := range v {
		xs[i] = f(e)
	}
	return Median(xs)
}

// Percentile is the nearest-rank p-th percentile (0 < p <= 100) of sorted
// (ascending): the smallest sample with at least p% of the samples at or
// below it. p <= 0 gives the smallest, p >= 100 the largest; zero for no
// samples.
func Percentile[T cmp.Ordered](sorted []T, p int) T {
	var zero T
	if len(sorted) == 0 {
		return zero
	}
	p = min(max(p, 0), 100)
	i := (p*len(sorted)+99)/100 - 1
	return sorted[max(i, 0)]
}
