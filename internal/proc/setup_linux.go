package proc

// Setup: the sandbox's mount and UTS namespaces.
//
// A helper (this binary, re-executed) is cloned into a new mount and UTS
// namespace and, through the nsenter constructor, into the sandbox's netns.
// It makes / recursively slave (host mounts and unmounts still propagate in,
// ours never leak out), bind-mounts the sandbox's files, sets the hostname,
// and lazily unmounts the private ns dir so that this namespace does not pin
// the namespace files of every other sandbox. It then reports "ok" on its
// status pipe and waits; the parent bind-mounts the helper's mnt and uts
// namespaces to their files, closes the control pipe, and reaps it.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/tether-net/tether/internal/netns"
	"golang.org/x/sys/unix"
)

// setupConfig is what the setup helper receives (JSON in configEnv).
type setupConfig struct {
	Hostname string
	Files    map[string]string
	NSDir    string
}

// Setup creates the sandbox's mount and UTS namespaces and persists them at
// spec.MntNS and spec.UTSNS (which must not exist), with spec.Files
// bind-mounted and spec.Hostname set inside. nsDir is the netns.PrepareDir'd
// directory holding the namespace files. On failure nothing is left behind.
func Setup(spec Spec, nsDir string) (err error) {
	cfg, err := checkSetup(spec, nsDir)
	if err != nil {
		return fmt.Errorf("set up sandbox: %w", err)
	}
	h, err := startSetupHelper(spec.NetNS, cfg)
	if err != nil {
		return fmt.Errorf("set up sandbox: %w", err)
	}
	defer func() {
		if werr := h.finish(); werr != nil && err == nil {
			err = fmt.Errorf("set up sandbox: %w", werr)
		}
		if err != nil {
			_ = netns.Delete(spec.MntNS)
			_ = netns.Delete(spec.UTSNS)
		}
	}()
	if err := h.ready(); err != nil {
		return fmt.Errorf("set up sandbox: %w", err)
	}
	pid := h.cmd.Process.Pid
	if err := netns.BindProcNS(pid, "mnt", spec.MntNS); err != nil {
		return fmt.Errorf("set up sandbox: %w", err)
	}
	if err := netns.BindProcNS(pid, "uts", spec.UTSNS); err != nil {
		return fmt.Errorf("set up sandbox: %w", err)
	}
	return nil
}

func checkSetup(spec Spec, nsDir string) (setupConfig, error) {
	if spec.MntNS == "" || spec.UTSNS == "" {
		return setupConfig{}, errors.New("MntNS and UTSNS are required")
	}
	if len(spec.Hostname) > 64 {
		return setupConfig{}, fmt.Errorf("hostname %q longer than 64 bytes", spec.Hostname)
	}
	for target, src := range spec.Files {
		if !filepath.IsAbs(target) || !filepath.IsAbs(src) {
			return setupConfig{}, fmt.Errorf("file %q from %q: paths must be absolute", target, src)
		}
		if _, err := os.Stat(src); err != nil {
			return setupConfig{}, fmt.Errorf("file %q: source: %w", target, err)
		}
	}
	if err := netns.CheckDir(nsDir); err != nil {
		return setupConfig{}, err
	}
	dir, err := filepath.EvalSymlinks(nsDir)
	if err != nil {
		return setupConfig{}, err
	}
	dir, err = filepath.Abs(dir)
	return setupConfig{Hostname: spec.Hostname, Files: spec.Files, NSDir: dir}, err
}

// helper is the parent's view of a running setup helper.
type helper struct {
	cmd    *exec.Cmd
	status *os.File // read end: "ok\n" or an error line
	ctrl   *os.File // write end: closing it tells the helper to exit
}

// startSetupHelper clones /proc/self/exe into new mount and UTS namespaces,
// entering netNS (if set) through the nsenter constructor.
func startSetupHelper(netNS string, cfg setupConfig) (*helper, error) {
	conf, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer statusW.Close()
	ctrlR, ctrlW, err := os.Pipe()
	if err != nil {
		statusR.Close()
		return nil, err
	}
	defer ctrlR.Close()
	env := []string{modeEnv + "=setup", configEnv + "=" + string(conf)}
	if netNS != "" {
		env = append(env, nsenterEnv+"=net="+netNS, nsenterErrFD+"=3")
	}
	cmd := &exec.Cmd{
		Path:       selfExe,
		Args:       []string{"tether-sandbox-setup"},
		Env:        env,
		ExtraFiles: []*os.File{statusW, ctrlR}, // fds 3 and 4
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWUTS,
			Pdeathsig:  syscall.SIGKILL,
		},
	}
	if err := cmd.Start(); err != nil {
		statusR.Close()
		ctrlW.Close()
		return nil, fmt.Errorf("start helper: %w", err)
	}
	return &helper{cmd: cmd, status: statusR, ctrl: ctrlW}, nil
}

// ready waits for the helper's report.
func (h *helper) ready() error {
	line, err := bufio.NewReader(h.status).ReadString('\n')
	if line == "ok\n" {
		return nil
	}
	if line = strings.TrimSpace(line); line != "" {
		return fmt.Errorf("helper: %s", line)
	}
	return fmt.Errorf("helper exited without a report: %w", err)
}

// finish tells the helper to exit and reaps it.
func (h *helper) finish() error {
	h.ctrl.Close()
	h.status.Close()
	if err := h.cmd.Wait(); err != nil {
		return fmt.Errorf("helper: %w", err)
	}
	return nil
}

// runSetupHelper is the helper's side; it returns the exit status.
func runSetupHelper() int {
	status := os.NewFile(3, "status")
	ctrl := os.NewFile(4, "ctrl")
	if err := setupNamespaces(); err != nil {
		fmt.Fprintf(status, "%s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return 1
	}
	if _, err := io.WriteString(status, "ok\n"); err != nil {
		return 1
	}
	_, _ = io.Copy(io.Discard, ctrl) // until the parent closes it
	return 0
}

func setupNamespaces() error {
	if nsenterMissing() {
		return errors.New(nsenterMissingMsg)
	}
	var cfg setupConfig
	if err := json.Unmarshal([]byte(os.Getenv(configEnv)), &cfg); err != nil {
		return fmt.Errorf("decode %s: %w", configEnv, err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make / rslave: %w", err)
	}
	if err := bindFiles(cfg.Files); err != nil {
		return err
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return fmt.Errorf("set hostname %q: %w", cfg.Hostname, err)
		}
	}
	if err := unix.Unmount(cfg.NSDir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount ns dir %q in the sandbox: %w", cfg.NSDir, err)
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
