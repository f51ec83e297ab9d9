package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// A sandbox's first process can resolve names at once: the embedded
// resolver is serving before that process starts (it used to start just
// after it, and a first `exec -- ping db` lost that race about two times
// in three). Each round is a new sandbox whose very first command asks.
func TestDNSFirstProcessResolves(t *testing.T) {
	_, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.91.0.0/24", "firstdns")
	d.MustTether("sandbox", "create", "--name", "db", "--network", "firstdns")
	want := ip(t, d, "db", "firstdns")
	for i := range 8 {
		name := fmt.Sprintf("web%d", i)
		d.MustTether("sandbox", "create", "--name", name, "--network", "firstdns")
		out, err := d.Tether("exec", name, "--", "getent", "hosts", "db")
		if err != nil || !strings.HasPrefix(out, want) {
			t.Errorf("round %d: the first process's lookup of db: %q %v, want %s", i, out, err, want)
		}
	}
}
