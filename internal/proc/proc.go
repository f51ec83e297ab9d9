// Package proc creates a sandbox's mount and UTS namespaces and runs
// processes inside a sandbox's namespaces.
//
// Both jobs need a process that is in the right namespaces from its first
// instruction: a Go program is multi-threaded before main, and
// setns(CLONE_NEWNS) refuses a multi-threaded process. So proc re-executes
// the current binary (/proc/self/exe) as a helper. The binary must import
// internal/nsenter, whose C constructor joins the namespaces named in
// _TETHER_NSENTER before the Go runtime starts, and must call Main first
// thing in main(), which runs the helper's job when the process is one.
//
// The helpers are selected by the environment variable _TETHER_PROC
// ("setup" or "exec"), which never reaches the user's command.
package proc

import (
	"fmt"
	"io"
	"os"
)

// ExitEnterFailed is the exit status of a re-executed helper that could not
// enter the sandbox's namespaces (the nsenter constructor's status). Start
// reports that case as an error, so a Process never exits with it for
// that reason.
const ExitEnterFailed = 125

// Exit statuses of a command that never ran, as Docker and POSIX shells use
// them.
const (
	ExitCannotInvoke = 126 // found but could not be executed, or bad working directory
	ExitNotFound     = 127 // not found in $PATH inside the sandbox
)

const (
	modeEnv      = "_TETHER_PROC"
	configEnv    = "_TETHER_PROC_CONFIG"
	nsenterEnv   = "_TETHER_NSENTER"
	nsenterErrFD = "_TETHER_NSENTER_ERRFD"
	selfExe      = "/proc/self/exe"
	defaultPath  = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Spec describes a sandbox (for Setup) and a command in it (for Start).
type Spec struct {
	// Namespace files, each under a directory prepared with
	// netns.PrepareDir. Setup creates MntNS and UTSNS; NetNS must exist.
	// For Start, empty MntNS and UTSNS mean "enter only the netns" (a
	// namespace adopted from another runtime).
	NetNS, MntNS, UTSNS string

	// Hostname set in the sandbox's UTS namespace by Setup ("" = keep the host's).
	Hostname string

	// Files maps an absolute path inside the sandbox (e.g. "/etc/hosts") to
	// a file on the host that Setup bind-mounts there, read-write. The
	// target must already exist: the sandbox shares the host's root
	// filesystem, so creating it would create it on the host (and fails on
	// a read-only /etc). Writes to the source are visible inside only when
	// made in place (truncate and write), not by rename.
	Files map[string]string

	// Command for Start: Args[0] is looked up in $PATH inside the sandbox's
	// mount namespace. Env is the complete environment (nil = PATH only; a
	// default PATH is added when missing). Dir is absolute ("" = "/").
	Args []string
	Env  []string
	Dir  string

	// Stdio for Start; nil means /dev/null.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Main runs a proc helper's job and exits when this process is one (it was
// started by Setup or Start); otherwise it returns at once. Call it first in
// main(), and in TestMain of tests that use Setup or Start.
func Main() {
	switch mode := os.Getenv(modeEnv); mode {
	case "":
		return
	case "setup":
		os.Exit(runSetupHelper())
	case "exec":
		os.Exit(runExecHelper())
	default:
		fmt.Fprintf(os.Stderr, "tether: unknown helper mode %s=%q\n", modeEnv, mode)
		os.Exit(ExitEnterFailed)
	}
}

// nsenterMissing reports whether the nsenter constructor did not run in this
// helper (it removes the variable when it succeeds).
func nsenterMissing() bool {
	_, set := os.LookupEnv(nsenterEnv)
	return set
}

const nsenterMissingMsg = "this binary does not import internal/nsenter, so it cannot enter namespaces"
