package cmdconn

import "syscall"

// sysProcAttr asks the kernel to kill the child when the thread that started
// it dies, so a CLI killed with SIGKILL leaves no ssh behind. Go ends a
// thread early only when a goroutine locked to it exits, which the CLI never
// does, so in practice this means: when the CLI dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
