package proc

// New mount and UTS namespaces for a sandbox's first process.
//
// Start clones the exec helper with CLONE_NEWNS|CLONE_NEWUTS; the nsenter
// constructor puts it in the sandbox's netns. Before it execs the command,
// the helper makes / recursively slave (host mounts and unmounts still
// propagate in, ours never leak out), bind-mounts the sandbox's files, sets
// the hostname, and lazily unmounts the private ns dir so that this
// namespace does not pin the namespace files of every other sandbox. The
// namespaces then live exactly as long as the processes in them: later
// commands join them through a running process (Spec.MntNS, Spec.UTSNS).

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/tether-net/tether/internal/netns"
	"golang.org/x/sys/unix"
)

// checkNew validates n and returns it with NSDir resolved.
func checkNew(n NewNS) (NewNS, error) {
	if len(n.Hostname) > 64 {
		return n, fmt.Errorf("hostname %q longer than 64 bytes", n.Hostname)
	}
	for target, src := range n.Files {
		if !filepath.IsAbs(target) || !filepath.IsAbs(src) {
			return n, fmt.Errorf("file %q from %q: paths must be absolute", target, src)
		}
		if _, err := os.Stat(src); err != nil {
			return n, fmt.Errorf("file %q: source: %w", target, err)
		}
	}
	if n.NSDir == "" {
		return n, nil
	}
	if err := netns.CheckDir(n.NSDir); err != nil {
		return n, err
	}
	dir, err := filepath.EvalSymlinks(n.NSDir)
	if err != nil {
		return n, err
	}
	n.NSDir, err = filepath.Abs(dir)
	return n, err
}

// setupNamespaces is the helper's side: it runs in the new mount and UTS
// namespaces, before the command is executed.
func setupNamespaces(conf string) error {
	var n NewNS
	if err := json.Unmarshal([]byte(conf), &n); err != nil {
		return fmt.Errorf("decode %s: %w", configEnv, err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make / rslave: %w", err)
	}
	if err := bindFiles(n.Files); err != nil {
		return err
	}
	if n.Hostname != "" {
		if err := unix.Sethostname([]byte(n.Hostname)); err != nil {
			return fmt.Errorf("set hostname %q: %w", n.Hostname, err)
		}
	}
	if n.NSDir != "" {
		if err := unix.Unmount(n.NSDir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount ns dir %q in the sandbox: %w", n.NSDir, err)
		}
	}
	return nil
}

// bindFiles bind-mounts each source over its target, in a stable order.
func bindFiles(files map[string]string) error {
	targets := make([]string, 0, len(files))
	for t := range files {
		targets = append(targets, t)
	}
	sort.Strings(targets)
	for _, t := range targets {
		if _, err := os.Stat(t); err != nil {
			return fmt.Errorf("file %q: target must exist on the host (the sandbox shares its root filesystem): %w", t, err)
		}
		if err := unix.Mount(files[t], t, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %q on %q: %w", files[t], t, err)
		}
	}
	return nil
}
