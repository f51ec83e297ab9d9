package engine

// Crash injection for tests. TETHER_TEST_FAULT=<point> makes the daemon kill
// itself with SIGKILL when it reaches that point: no deferred rollback runs,
// no file is flushed, exactly as if the machine lost power or an operator ran
// kill -9 there. The end-to-end tests use it to prove that the next start
// cleans up whatever each step of an operation left behind. With the variable
// unset, fault costs one comparison of a string with "".
//
// The points are listed in FaultPoints and docs/lifecycle.md.

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"
)

// FaultEnv names the environment variable that arms a fault point.
const FaultEnv = "TETHER_TEST_FAULT"

// FaultPoints are the places fault can stop the daemon, in the order an
// operation reaches them.
var FaultPoints = []string{
	"network.create.after-bridge", // bridge made, no record
	"network.create.after-commit", // bridge and records made
	"network.remove.after-bridge", // bridge deleted, records kept
	"sandbox.create.after-netns",  // network namespace made, no record
	"attach.after-reserve",        // address taken (a global one claimed and published), nothing in the kernel
	"attach.after-join",           // veth pair wired and addressed; recorded when written beside the join (early.go), else no record
	"attach.after-publish",        // host ports held and mapped; recorded as after-join (an attach with ports: no record)
	"attach.after-commit",         // endpoint recorded, sandbox files not rewritten
	"detach.after-leave",          // veth pair deleted, endpoint still recorded
	"detach.after-commit",         // endpoint record and address released
	"sandbox.remove.after-detach", // endpoints gone, namespaces and record kept
	"sandbox.remove.after-netns",  // namespaces deleted, record kept
	"exec.after-start",            // a process started (new mount and UTS namespaces for the first), not recorded
}

// faultPoint is read once, when the package is loaded.
var faultPoint = os.Getenv(FaultEnv)

// faultAction is what happens at the armed point: the daemon kills itself.
// Unit tests in this package replace it with one that returns an error, so
// the operation fails at that step and its rollback runs.
var faultAction = func(point string) error {
	fmt.Fprintf(os.Stderr, "tether: test fault injected at %s: killing myself with SIGKILL\n", point)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	for {
		time.Sleep(time.Second) // the signal is on its way
	}
}

// fault stops the daemon abruptly when point is the armed fault point (in
// unit tests: fails the operation there with a *faultError).
func (e *Engine) fault(point string) error {
	if faultPoint == "" || faultPoint != point {
		return nil
	}
	if err := faultAction(point); err != nil {
		return &faultError{point: point, err: err}
	}
	return nil
}

// faultError is an operation stopped at a fault point (unit tests): what
// follows the point is not done, as after a crash there.
type faultError struct {
	point string
	err   error
}

func (f *faultError) Error() string { return "fault point " + f.point + ": " + f.err.Error() }
func (f *faultError) Unwrap() error { return f.err }

func isFault(err error) bool {
	var f *faultError
	return errors.As(err, &f)
}

// checkFault refuses an armed point that does not exist, so a typo in a test
// fails loudly instead of never firing.
func (e *Engine) checkFault() error {
	if faultPoint == "" {
		return nil
	}
	if !slices.Contains(FaultPoints, faultPoint) {
		return fmt.Errorf("%s=%q: unknown fault point (known: %v)", FaultEnv, faultPoint, FaultPoints)
	}
	e.log.Warn("test fault injection armed: the daemon kills itself at this point", "point", faultPoint)
	return nil
}
