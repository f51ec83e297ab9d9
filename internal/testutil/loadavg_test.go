package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadAvg(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, want string }{
		{"proc form", "0.52 0.58 0.59 2/1161 123456\n", "0.52 0.58 0.59"},
		{"short", "0.52 0.58\n", ""},
		{"empty", "", ""},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
		if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := loadAvg(p); got != tc.want {
			t.Errorf("%s: loadAvg = %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := loadAvg(filepath.Join(dir, "missing")); got != "" {
		t.Errorf("missing file: %q", got)
	}
	if got := LoadAvg(); len(strings.Fields(got)) != 3 {
		t.Errorf("LoadAvg() = %q, want three fields from /proc/loadavg", got)
	}
}
