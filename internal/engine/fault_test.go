package engine

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func TestFault(t *testing.T) {
	e := &Engine{log: slog.New(slog.DiscardHandler)}
	var hit []string
	oldPoint, oldAction := faultPoint, faultAction
	t.Cleanup(func() { faultPoint, faultAction = oldPoint, oldAction })
	faultAction = func(p string) error { hit = append(hit, p); return nil }

	faultPoint = ""
	_ = e.fault("attach.after-join")
	if err := e.checkFault(); err != nil || len(hit) != 0 {
		t.Fatalf("unarmed: hit %v, check %v", hit, err)
	}
	faultPoint = "attach.after-join"
	if err := e.checkFault(); err != nil {
		t.Fatal(err)
	}
	_ = e.fault("attach.after-commit")
	_ = e.fault("attach.after-join")
	if !slices.Equal(hit, []string{"attach.after-join"}) {
		t.Fatalf("hit %v, want only the armed point", hit)
	}
	faultPoint = "attach.after-jion"
	if err := e.checkFault(); err == nil || !strings.Contains(err.Error(), "unknown fault point") {
		t.Fatalf("typo accepted: %v", err)
	}
}
