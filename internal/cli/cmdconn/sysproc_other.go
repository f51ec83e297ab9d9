//go:build !linux

package cmdconn

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
