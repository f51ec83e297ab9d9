package testutil

import (
	"os"
	"strings"
)

// LoadAvg is the first three fields of /proc/loadavg ("0.52 0.58 0.59":
// the 1, 5 and 15 minute load averages), which benchmark reports record
// before and after a run; "" when it cannot be read.
func LoadAvg() string { return loadAvg("/proc/loadavg") }

func loadAvg(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
