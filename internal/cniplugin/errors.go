package cniplugin

// Client errors as CNI errors: which spec code each failure gets, with a
// message that carries the daemon's own (it names the field it refused).

import (
	"errors"
	"net/http"

	"github.com/containernetworking/cni/pkg/skel"
	cnitypes "github.com/containernetworking/cni/pkg/types"
)

func asUnreachable(err error) (*unreachableError, bool) {
	var ue *unreachableError
	return ue, errors.As(err, &ue)
}

func asDaemonError(err error) (*daemonError, bool) {
	var de *daemonError
	return de, errors.As(err, &de)
}

// commandError is a failed request of command cmd:
//   - 11 (try again later): no connection, no answer in time, or 503;
//   - 7 (invalid network config): the daemon refused the request (400,
//     404 an unknown network, 409 a conflict such as an address in use);
//   - ErrDaemon: any other failure of the daemon.
func commandError(cmd string, err error) *cnitypes.Error {
	var te *timeoutError
	if _, ok := asUnreachable(err); ok || errors.As(err, &te) {
		return errorf(cnitypes.ErrTryAgainLater, "%s: %v", cmd, err)
	}
	de, ok := asDaemonError(err)
	switch {
	case !ok:
		return errorf(ErrDaemon, "%s: %v", cmd, err)
	case de.status == http.StatusServiceUnavailable:
		return errorf(cnitypes.ErrTryAgainLater, "%s: %v", cmd, err)
	case de.status == http.StatusBadRequest || de.status == http.StatusNotFound ||
		de.status == http.StatusConflict || de.status == http.StatusUnprocessableEntity:
		return errorf(cnitypes.ErrInvalidNetworkConfig, "%s: %v", cmd, err)
	}
	return errorf(ErrDaemon, "%s: %v", cmd, err)
}

// checkError is a failed CHECK request: 3 (unknown container) when the
// daemon has no such attachment, ErrCheckFailed when the kernel does not
// match its record (409), else as commandError.
func checkError(args *skel.CmdArgs, err error) *cnitypes.Error {
	de, ok := asDaemonError(err)
	switch {
	case ok && de.status == http.StatusNotFound:
		return errorf(cnitypes.ErrUnknownContainer, "CHECK: container %s has no attachment on interface %s: %v",
			args.ContainerID, args.IfName, err)
	case ok && de.status == http.StatusConflict:
		return errorf(ErrCheckFailed, "CHECK of container %s interface %s: %v", args.ContainerID, args.IfName, err)
	}
	return commandError("CHECK", err)
}
