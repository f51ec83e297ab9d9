// Package proc runs processes inside a sandbox's namespaces: its network
// namespace, and mount and UTS namespaces that are either those of a process
// already running in the sandbox (joined) or new ones made for the command.
//
// A sandbox's mount namespace is never persisted as a file: the kernel lets
// a process bind a mount namespace's file only when that namespace is newer
// than its own (docs/sandboxes.md), which a daemon started in a mount
// namespace of its own (ip netns exec, systemd PrivateMounts=) or restarted
// into a newer one cannot count on. Processes hold it instead.
//
// Entering needs a process that is in the right namespaces from its first
// instruction: a Go program is multi-threaded before main, and
// setns(CLONE_NEWNS) refuses a multi-threaded process. So proc re-executes
// the current binary (/proc/self/exe) as a helper. The binary must import
// internal/nsenter, whose C constructor joins the namespaces named in
// _TETHER_NSENTER before the Go runtime starts, and must call Main first
// thing in main(), which runs the helper's job when the process is one.
//
// The helper is selected by the environment variable _TETHER_PROC ("exec"),
// which never reaches the user's command.
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

// Spec describes a command in a sandbox.
type Spec struct {
	// NetNS is the sandbox's network namespace: a namespace file (under a
	// netns.PrepareDir'd directory) or /proc/PID/ns/net. Required.
	NetNS string

	// MntNS and UTSNS, when set, are open namespace files (normally
	// /proc/PID/ns/mnt and /proc/PID/ns/uts of a process running in the
	// sandbox) that the command joins. Set both or neither.
	MntNS, UTSNS *os.File

	// New, when set (and MntNS/UTSNS are not), gives the command new mount
	// and UTS namespaces: the sandbox's first process. Neither set: the
	// command runs in the caller's mount and UTS namespaces (a network
	// namespace adopted from another runtime).
	New *NewNS

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

// NewNS describes the mount and UTS namespaces Start makes for a sandbox's
// first process.
type NewNS struct {
	// Hostname set in the new UTS namespace ("" = keep the host's).
	Hostname string

	// Files maps an absolute path inside the sandbox (e.g. "/etc/hosts") to
	// a file on the host that is bind-mounted there, read-write. The target
	// must already exist: the sandbox shares the host's root filesystem, so
	// creating it would create it on the host (and fails on a read-only
	// /etc). Writes to the source are visible inside only when made in place
	// (truncate and write), not by rename.
	Files map[string]string

	// NSDir is the netns.PrepareDir'd directory holding namespace files; it
	// is lazily unmounted inside the new mount namespace, so the sandbox
	// does not pin every other sandbox's namespace file ("" = none).
	NSDir string
}

// Main runs a proc helper's job and exits when this process is one (it was
// started by Setup or Start); otherwise it returns at once. Call it first in
// main(), and in TestMain of tests that use Setup or Start.
func Main() {
	switch mode := os.Getenv(modeEnv); mode {
	case "":
		return
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
