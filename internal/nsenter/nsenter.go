// Package nsenter lets a re-executed tether binary start inside existing
// namespaces. Import it for its side effect only:
//
//	import _ "github.com/tether-net/tether/internal/nsenter"
//
// It holds a C constructor (nsenter.c) that runs before the Go runtime, while
// the process still has one thread. When the environment variable
// _TETHER_NSENTER is set, e.g. "net=/run/tether/ns/X-net,uts=...,mnt=..."
// (any subset of net, uts, mnt), the constructor opens every file, calls
// setns in the order net, uts, mnt, and removes the variable; Go code then
// starts inside those namespaces. Joining a mount namespace cannot be done
// any later: setns(CLONE_NEWNS) refuses a multi-threaded process.
//
// On failure it writes "tether-nsenter: <reason>" to stderr, and also to the
// file descriptor named by _TETHER_NSENTER_ERRFD when that is set, then exits
// with status 125 without running any Go code. internal/proc relies on the
// error fd to tell this apart from the command's own exit status.
//
// Without _TETHER_NSENTER the constructor does nothing. The package needs
// cgo (CGO_ENABLED=1); see docs/sandboxes.md for static builds. A binary
// containing it must never be setuid: the constructor trusts its environment.
package nsenter

// #cgo CFLAGS: -Wall
import "C"
