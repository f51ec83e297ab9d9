// Package nlutil holds the netlink idioms every Tether package shares.
package nlutil

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DumpTries is how often an interrupted netlink dump is tried in all.
const DumpTries = 5

// Dump runs a netlink dump (LinkList, RouteListFiltered, AddrList, ...),
// again while the kernel reports it interrupted (the table changed under
// it, netlink.ErrDumpInterrupted), so callers never act on a partial list.
// Every dump in Tether goes through it.
func Dump[T any](what string, f func() ([]T, error)) ([]T, error) {
	var err error
	for range DumpTries {
		var res []T
		res, err = f()
		if err == nil {
			return res, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil, fmt.Errorf("%s: interrupted %d times: %w", what, DumpTries, err)
}

// IsLinkGone reports whether err says the link does not exist (already
// deleted, or never there): deleting it again is success.
func IsLinkGone(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) ||
		strings.Contains(err.Error(), "not found") || strings.Contains(err.Error(), "no such device")
}
