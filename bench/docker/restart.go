package docker

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/moby/moby/client"
)

// RestartDockerd stops dockerd with SIGTERM (as `systemctl stop docker`
// does: without live-restore it stops its containers, releasing their
// networks) and starts it again on the same roots, socket and daemon.json;
// containerd keeps running. It returns once the API answers again.
func (d *Docker) RestartDockerd() error {
	d.mu.Lock()
	i := slices.IndexFunc(d.procs, func(p *daemonProc) bool { return p.name == "dockerd" })
	var p *daemonProc
	if i >= 0 {
		p = d.procs[i]
		d.procs = slices.Delete(d.procs, i, i+1)
	}
	d.mu.Unlock()
	if p == nil {
		return fmt.Errorf("dockerd is not running")
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.log.Close()
		return fmt.Errorf("dockerd did not stop within 30s of SIGTERM")
	}
	p.log.Close()
	d.start("dockerd", d.Socket, d.Refs.Dockerd, d.dockerdArgs()...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := d.Client.ServerVersion(ctx, client.ServerVersionOptions{}); err != nil {
		return fmt.Errorf("dockerd after restart: %w", err)
	}
	return nil
}
