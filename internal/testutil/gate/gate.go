// Package gate decides whether a test that needs privileges runs, skips or
// fails: without root a test skips, except when TETHER_E2E=1 demands the
// integration tests, where a missing privilege is a failure (a CI run that
// silently skipped them would pass having tested nothing).
//
// It imports only the standard library, so every package's tests can use
// it, including those of packages that internal/testutil itself imports
// (internal/netns), which cannot import testutil without a cycle.
// testutil.RequireRoot and testutil.E2E are this package's.
package gate

import (
	"os"
	"testing"
)

// geteuid is os.Geteuid; a variable for this package's tests.
var geteuid = os.Geteuid

// E2E reports whether the run demands integration tests (TETHER_E2E=1).
func E2E() bool { return os.Getenv("TETHER_E2E") == "1" }

// RequireRoot lets the test go on as root; without root it fails the test
// under TETHER_E2E=1 and skips it otherwise.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if geteuid() == 0 {
		return
	}
	if E2E() {
		tb.Fatal("TETHER_E2E=1 needs root: integration tests create namespaces")
	}
	tb.Skip("needs root (set TETHER_E2E=1 as root to run)")
}

// Root is for a test that runs either way but better as root (in a
// namespace of its own rather than on the host's loopback): it reports
// whether the process is root, and fails the test under TETHER_E2E=1
// when it is not.
func Root(tb testing.TB) bool {
	tb.Helper()
	if geteuid() == 0 {
		return true
	}
	if E2E() {
		tb.Fatal("TETHER_E2E=1 needs root: the test runs in a namespace of its own")
	}
	return false
}
