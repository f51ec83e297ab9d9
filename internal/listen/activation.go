package listen

// Socket activation, as sd_listen_fds(3) describes it: systemd opens the
// listening sockets of a .socket unit and starts the daemon with them as
// file descriptors 3, 4, ...; LISTEN_FDS says how many and LISTEN_PID for
// which process, so a child that inherited the environment (but not the
// descriptors) takes none.

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// firstActivatedFD is SD_LISTEN_FDS_START.
const firstActivatedFD = 3

// activationVars are unset once read, so no process the daemon starts sees
// them.
var activationVars = []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"}

// ErrNotActivated means the daemon was given no sockets by systemd.
var ErrNotActivated = errors.New("no sockets passed by systemd socket activation")

// activatedFDs returns the descriptor numbers systemd passed to process pid,
// as getenv reports LISTEN_FDS and LISTEN_PID. Variables meant for another
// process (LISTEN_PID differs) yield none.
func activatedFDs(getenv func(string) string, pid int) ([]int, error) {
	nfds, lpid := getenv("LISTEN_FDS"), getenv("LISTEN_PID")
	if nfds == "" {
		return nil, fmt.Errorf("%w: LISTEN_FDS is not set", ErrNotActivated)
	}
	if lpid != strconv.Itoa(pid) {
		return nil, fmt.Errorf("%w: LISTEN_PID is %q, not this process (%d)", ErrNotActivated, lpid, pid)
	}
	n, err := strconv.Atoi(nfds)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("LISTEN_FDS is %q, not a number of sockets", nfds)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: LISTEN_FDS is 0", ErrNotActivated)
	}
	fds := make([]int, n)
	for i := range fds {
		fds[i] = firstActivatedFD + i
	}
	return fds, nil
}

// socketFile is one activated socket: its descriptor number as passed and
// the file holding it.
type socketFile struct {
	fd int
	f  *os.File
}

// takeActivated returns this process's activated sockets (closed on exec)
// and unsets the activation variables, found or not.
func takeActivated() ([]*socketFile, error) {
	fds, err := activatedFDs(os.Getenv, os.Getpid())
	for _, v := range activationVars {
		os.Unsetenv(v)
	}
	if err != nil {
		return nil, err
	}
	files := make([]*socketFile, len(fds))
	for i, fd := range fds {
		syscall.CloseOnExec(fd)
		files[i] = &socketFile{fd: fd, f: os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd))}
	}
	return files, nil
}

// Activation hands out the activated sockets to the fd:// entries of hosts,
// each at most once. The zero value takes them from the environment on
// first use.
type Activation struct {
	taken bool
	files []*socketFile // index i is fd 3+i; nil once handed out
	err   error
}

// TakeActivation takes this process's activated sockets now (closed on
// exec from here on, so no process the daemon starts before its listeners
// open inherits them) and unsets the activation variables. Not being
// activated is reported by the first fd:// entry that needs a socket.
func TakeActivation() *Activation {
	files, err := takeActivated()
	return &Activation{taken: true, files: files, err: err}
}

// Check reports, before anything is set up, why an fd:// entry of hosts
// cannot be served: no sockets were passed.
func (a *Activation) Check(hosts []string) error {
	for _, h := range hosts {
		if strings.HasPrefix(h, "fd://") && a.err != nil {
			return fmt.Errorf("hosts: %s: %w", h, a.err)
		}
	}
	return nil
}

// pick returns the sockets fd://sel names: every remaining one for sel "",
// else the one at descriptor sel.
func (a *Activation) pick(sel string) ([]*socketFile, error) {
	if !a.taken {
		a.files, a.err = takeActivated()
		a.taken = true
	}
	if a.err != nil {
		return nil, a.err
	}
	if sel == "" {
		return a.pickAll()
	}
	fd, _ := strconv.Atoi(sel)
	i := fd - firstActivatedFD
	if i < 0 || i >= len(a.files) {
		return nil, fmt.Errorf("fd %d was not passed: systemd passed %d socket(s), fds %d..%d",
			fd, len(a.files), firstActivatedFD, firstActivatedFD+len(a.files)-1)
	}
	if a.files[i] == nil {
		return nil, fmt.Errorf("fd %d is named twice in hosts", fd)
	}
	f := a.files[i]
	a.files[i] = nil
	return []*socketFile{f}, nil
}

func (a *Activation) pickAll() ([]*socketFile, error) {
	var out []*socketFile
	for i, f := range a.files {
		if f != nil {
			out = append(out, f)
			a.files[i] = nil
		}
	}
	if len(out) == 0 {
		return nil, errors.New("every activated socket is already named in hosts")
	}
	return out, nil
}

// closeRest closes the activated sockets no host entry named.
func (a *Activation) closeRest() {
	for i, f := range a.files {
		if f != nil {
			f.f.Close()
			a.files[i] = nil
		}
	}
}
