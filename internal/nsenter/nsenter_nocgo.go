//go:build !cgo

package nsenter

// Without cgo the constructor in nsenter.c is not built and a re-executed
// tether could not enter a mount namespace. Fail the build, not the sandbox.
var _ = internal_nsenter_needs_cgo_build_with_CGO_ENABLED_1
