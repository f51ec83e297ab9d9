package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	raceOnce sync.Once
	racePath string
	raceErr  error
)

// RaceBinary builds cmd/tether with the race detector, once per test binary,
// for tests that hammer the daemon concurrently; a data race makes the
// daemon print "WARNING: DATA RACE" (see Daemon.Log).
func RaceBinary(t testing.TB) string {
	t.Helper()
	raceOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			raceErr = err
			return
		}
		dir, err := os.MkdirTemp("", "tether-bin-race-")
		if err != nil {
			raceErr = err
			return
		}
		racePath = filepath.Join(dir, "tether")
		cmd := exec.Command("go", "build", "-race", "-tags", "osusergo,netgo", "-o", racePath, "./cmd/tether")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			raceErr = fmt.Errorf("build tether -race: %v\n%s", err, out)
		}
	})
	if raceErr != nil {
		t.Fatal(raceErr)
	}
	return racePath
}

// RemoveRaceBinary deletes what RaceBinary built; call it from TestMain.
func RemoveRaceBinary() {
	if racePath != "" {
		os.RemoveAll(filepath.Dir(racePath))
	}
}
