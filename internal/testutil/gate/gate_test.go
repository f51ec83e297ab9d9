package gate

import (
	"fmt"
	"testing"
)

// recorder is a testing.TB that records Fatal and Skip; both end the
// calling goroutine in a real test, here they panic and run recovers.
type recorder struct {
	testing.TB
	fatal, skip bool
}

type stop struct{}

func (r *recorder) Helper()      {}
func (r *recorder) Fatal(...any) { r.fatal = true; panic(stop{}) }
func (r *recorder) Skip(...any)  { r.skip = true; panic(stop{}) }

func (r *recorder) run(fn func(testing.TB)) {
	defer func() {
		if p := recover(); p != nil {
			if _, ok := p.(stop); !ok {
				panic(p)
			}
		}
	}()
	fn(r)
}

// result is what a gate did: "go on" (with Root's answer), "skip" or "fail".
func (r *recorder) result(root bool) string {
	switch {
	case r.fatal:
		return "fail"
	case r.skip:
		return "skip"
	}
	return fmt.Sprint("go on ", root)
}

func TestGate(t *testing.T) {
	old := geteuid
	t.Cleanup(func() { geteuid = old })
	for _, tc := range []struct {
		euid        int
		e2e         string
		requireRoot string
		root        string
	}{
		{0, "", "go on false", "go on true"},
		{0, "1", "go on false", "go on true"},
		{1000, "", "skip", "go on false"},
		{1000, "0", "skip", "go on false"},
		{1000, "1", "fail", "fail"}, // the stricter rule: no silent skip under TETHER_E2E=1
	} {
		geteuid = func() int { return tc.euid }
		t.Setenv("TETHER_E2E", tc.e2e)
		if got := E2E(); got != (tc.e2e == "1") {
			t.Errorf("TETHER_E2E=%q: E2E() = %v", tc.e2e, got)
		}
		r := &recorder{TB: t}
		r.run(RequireRoot)
		if got := r.result(false); got != tc.requireRoot {
			t.Errorf("euid %d, TETHER_E2E=%q: RequireRoot: %s, want %s", tc.euid, tc.e2e, got, tc.requireRoot)
		}
		r = &recorder{TB: t}
		var root bool
		r.run(func(tb testing.TB) { root = Root(tb) })
		if got := r.result(root); got != tc.root {
			t.Errorf("euid %d, TETHER_E2E=%q: Root: %s, want %s", tc.euid, tc.e2e, got, tc.root)
		}
	}
}
