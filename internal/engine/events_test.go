package engine

import (
	"testing"
	"time"
)

// The history keeps the last eventHistory events, oldest first, and since
// picks the tail of it.
func TestEventsHistory(t *testing.T) {
	ev := newEvents()
	start := time.Now()
	for i := range eventHistory + 10 {
		ev.publish(Event{Type: "network", Action: "create", ID: string(rune('a' + i%26))})
	}
	past, _, cancel := ev.SubscribeSince(start)
	defer cancel()
	if len(past) != eventHistory {
		t.Fatalf("kept %d events, want %d", len(past), eventHistory)
	}
	for i := 1; i < len(past); i++ {
		if past[i].Time.Before(past[i-1].Time) {
			t.Fatalf("event %d is older than event %d", i, i-1)
		}
	}
	if want := string(rune('a' + (eventHistory+9)%26)); past[len(past)-1].ID != want {
		t.Errorf("newest kept event %q, want %q", past[len(past)-1].ID, want)
	}
	if want := string(rune('a' + 10%26)); past[0].ID != want {
		t.Errorf("oldest kept event %q, want %q", past[0].ID, want)
	}
	mid := past[100].Time
	tail, _, cancel2 := ev.SubscribeSince(mid)
	defer cancel2()
	if len(tail) < eventHistory-100 || tail[0].Time.Before(mid) {
		t.Errorf("since the 100th kept event: %d events", len(tail))
	}
}
