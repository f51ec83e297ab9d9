package stats

import (
	"slices"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{7}, 7},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{5, 5, 1, 9, 9}, 5},
		{[]float64{-1, 1}, 0},
	} {
		in := slices.Clone(tc.in)
		if got := Median(in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("Median reordered its input: %v", in)
		}
	}
	if got := Median([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond, 10 * time.Millisecond}); got != 2500*time.Microsecond {
		t.Errorf("Median of durations = %v, want 2.5ms", got)
	}
	if got := Median([]int64{1, 2}); got != 1 {
		t.Errorf("Median(int64 1, 2) = %d, want 1 (rounded down)", got)
	}
	if got := Median([]int64{1 << 62, 1<<62 + 2}); got != 1<<62+1 {
		t.Errorf("Median near the int64 limit = %d (overflow?)", got)
	}
}

func TestMedianOf(t *testing.T) {
	type r struct{ qps float64 }
	if got := MedianOf([]r{{10}, {30}, {20}}, func(x r) float64 { return x.qps }); got != 20 {
		t.Errorf("MedianOf = %v, want 20", got)
	}
}

func TestPercentile(t *testing.T) {
	s := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct{ p, want int }{
		{50, 5}, {90, 9}, {99, 10}, {100, 10}, {10, 1}, {11, 2}, {1, 1}, {0, 1}, {-5, 1}, {150, 10},
	} {
		if got := Percentile(s, tc.p); got != tc.want {
			t.Errorf("Percentile(1..10, %d) = %d, want %d", tc.p, got, tc.want)
		}
	}
	if got := Percentile([]int{4, 8, 15, 16}, 50); got != 8 {
		t.Errorf("p50 of an even count = %d, want the lower middle 8", got)
	}
	if got := Percentile([]float64(nil), 50); got != 0 {
		t.Errorf("Percentile of nothing = %v", got)
	}
}
