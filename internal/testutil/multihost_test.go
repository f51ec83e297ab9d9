package testutil

import "testing"

func TestUnderlayPing(t *testing.T) {
	RequireRoot(t)
	u := NewUnderlay(t, 0)
	a, b := u.Join("h"), u.Join("h")
	if out, err := InNS(a.NS, "ping", "-c1", "-W2", b.Addr); err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", b.Addr, a.NS, err, out)
	}
}
