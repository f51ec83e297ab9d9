package memory

import "testing"

func TestGroupGoroutines(t *testing.T) {
	profile := "goroutine profile: total 5\n" +
		"3 @ 0x1 0x2\n#\t0x1\truntime.gopark+0x1\t/x.go:1\n#\t0x2\tgithub.com/x/engine.(*Engine).reap+0x2\t/e.go:2\n#\t0x3\tgithub.com/x/engine.(*Engine).Exec.gowrap1+0x3\t/e.go:3\n\n" +
		"2 @ 0x4\n#\t0x4\tinternal/poll.runtime_pollWait+0x4\t/p.go:4\n#\t0x5\tgithub.com/x/dns.(*loop).run+0x5\t/l.go:5\n"
	got := groupGoroutines(profile)
	want := map[string]int{
		"github.com/x/engine.(*Engine).reap < github.com/x/engine.(*Engine).Exec.gowrap1": 3,
		"github.com/x/dns.(*loop).run": 2,
	}
	if len(got) != len(want) {
		t.Fatalf("groups %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("group %q: %d, want %d (all: %v)", k, got[k], n, got)
		}
	}
}

func TestSteps(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []int
	}{{20, []int{20}}, {50, []int{50}}, {200, []int{50, 200}}, {400, []int{50, 200, 400}}, {300, []int{50, 200, 300}}} {
		got := steps(tc.n)
		if len(got) != len(tc.want) {
			t.Errorf("steps(%d) = %v, want %v", tc.n, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("steps(%d) = %v, want %v", tc.n, got, tc.want)
			}
		}
	}
}
