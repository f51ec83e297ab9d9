package docker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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

// KillAll models the host's whole Docker stack dying at once (a crash or
// an OOM kill of the service, a rootless or dind Docker whose mount
// namespace goes with it): SIGKILL to dockerd first (so it sends no plugin
// call about its containers' deaths), then containerd, then everything
// else of the run (shims, docker-proxy, every container process); then
// every mount the engine made under Dir in the holder's mount namespace is
// unmounted, among them the containers' network namespace files under the
// exec root, so nothing holds the containers' network namespaces any more
// and the kernel deletes them with their interfaces. The Host's network
// namespace and holder stay, and so does anything else running in the
// namespace (a Tether daemon started beside dockerd). It returns the
// processes it killed and the mounts it removed.
func (d *Docker) KillAll() (killed, unmounted []string, err error) {
	d.mu.Lock()
	procs := d.procs
	d.procs = nil
	d.mu.Unlock()
	// procs are containerd then dockerd: dockerd first
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		killed = append(killed, fmt.Sprintf("%d %s", p.cmd.Process.Pid, p.name))
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			return killed, nil, fmt.Errorf("%s did not exit within 10s of SIGKILL", p.name)
		}
		p.log.Close()
	}
	killed = append(killed, d.Host.KillLeftovers()...)
	if left := d.Host.Leftovers(); len(left) > 0 {
		return killed, nil, fmt.Errorf("processes of %s still running after SIGKILL: %v", d.Host.NS, left)
	}
	unmounted, err = d.Host.MountsUnder(d.Dir)
	if err != nil || len(unmounted) == 0 {
		return killed, nil, err
	}
	if out, err := d.Host.Run("umount", unmounted...); err != nil {
		return killed, unmounted, fmt.Errorf("unmount the engine's mounts: %w %s", err, out)
	}
	if left, err := d.Host.MountsUnder(d.Dir); err != nil || len(left) > 0 {
		return killed, unmounted, errors.Join(err, fmt.Errorf("mounts left under %s after umount: %v", d.Dir, left))
	}
	return killed, unmounted, nil
}

// StartAgain starts containerd and dockerd again on the same roots, sockets
// and daemon.json after KillAll (as the service manager would) and returns
// once the API answers.
func (d *Docker) StartAgain() error {
	d.mu.Lock()
	running := len(d.procs)
	d.mu.Unlock()
	if running > 0 {
		return fmt.Errorf("containerd or dockerd still runs")
	}
	d.start("containerd", filepath.Join(d.Dir, "containerd.sock"), d.Refs.Containerd,
		"--config", filepath.Join(d.Dir, "containerd.toml"))
	d.start("dockerd", d.Socket, d.Refs.Dockerd, d.dockerdArgs()...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := d.Client.ServerVersion(ctx, client.ServerVersionOptions{}); err != nil {
		return fmt.Errorf("dockerd started again: %w", err)
	}
	return nil
}

// MountsUnder lists the mount points at or under dir in the holder's mount
// namespace (its /proc/PID/mountinfo), deepest first.
func (h *Host) MountsUnder(dir string) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", h.holder.Process.Pid))
	if err != nil {
		return nil, fmt.Errorf("mounts of %s: %w", h.NS, err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		// mountinfo escapes space, tab, newline and backslash in octal
		mp := mountinfoUnescape(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	// deepest first; of mounts stacked on one point, the last made first
	slices.Reverse(out)
	slices.SortStableFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return out, nil
}

func mountinfoUnescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
