package daemon

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/firewall"
	"github.com/tether-net/tether/internal/testutil"
	"github.com/tether-net/tether/internal/testutil/gate"
)

// The configuration decides the pieces built from it; none of these needs
// root or touches the host.

func TestNewLoggerLevels(t *testing.T) {
	old := slog.Default()
	t.Cleanup(func() { slog.SetDefault(old) })
	for _, tc := range []struct {
		level   string
		enabled slog.Level // the lowest level logged
	}{
		{"", slog.LevelInfo}, {"info", slog.LevelInfo}, {"debug", slog.LevelDebug},
		{"warn", slog.LevelWarn}, {"error", slog.LevelError}, {"fatal", slog.LevelError},
	} {
		l := newLogger(&config.Config{LogLevel: tc.level})
		ctx := context.Background()
		if !l.Enabled(ctx, tc.enabled) || l.Enabled(ctx, tc.enabled-1) {
			t.Errorf("log-level %q: lowest level logged is not %v", tc.level, tc.enabled)
		}
		if slog.Default() != l {
			t.Errorf("log-level %q: not the default logger", tc.level)
		}
	}
}

// iptables=false builds no nftables firewall (Noop) and nothing to watch.
func TestNewFirewallIPTablesFalse(t *testing.T) {
	fw, err := newFirewall(&config.Config{IPTables: false}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fw.(firewall.Noop); !ok {
		t.Fatalf("iptables=false: firewall %T, want firewall.Noop", fw)
	}
	stop, err := watchFirewall(t.Context(), fw, &config.Config{}, quiet)
	if err != nil || stop == nil {
		t.Fatalf("watchFirewall(Noop) = %v", err)
	}
	stop()
}

func TestListenOptions(t *testing.T) {
	no, yes := false, true
	// tls=false: plain TCP allowed, no TLS configuration.
	o, err := listenOptions(&config.Config{TLS: &no, Group: "docker"}, quiet)
	if err != nil || o.TLS != nil || !o.PlainTCP || o.Group != "docker" {
		t.Errorf("tls=false: %+v, %v", o, err)
	}

	ca := testutil.NewCA(t, "ca")
	files := ca.Issue(t, "daemon", testutil.CertOptions{Server: true})
	cfg := &config.Config{TLSVerify: &yes, TLSCACert: files.CA, TLSCert: files.Cert, TLSKey: files.Key}
	o, err = listenOptions(cfg, quiet)
	if err != nil || o.TLS == nil || o.PlainTCP {
		t.Fatalf("tlsverify: %+v, %v", o, err)
	}
	if o.TLS.ClientAuth != tls.RequireAndVerifyClientCert || len(o.TLS.Certificates) != 1 {
		t.Errorf("tlsverify: client auth %v, %d certificates", o.TLS.ClientAuth, len(o.TLS.Certificates))
	}

	cfg.TLSKey = filepath.Join(t.TempDir(), "missing.pem")
	if _, err := listenOptions(cfg, quiet); err == nil {
		t.Error("a missing tlskey was accepted: the start must stop before anything is set up")
	}
}

func TestNewHTTPServerLimits(t *testing.T) {
	s := newHTTPServer(http.NotFoundHandler(), quiet)
	if s.ReadHeaderTimeout != readHeaderTimeout || s.IdleTimeout != idleTimeout || s.MaxHeaderBytes != maxHeaderBytes || s.ErrorLog == nil {
		t.Errorf("server limits: %+v", s)
	}
	if s.ReadTimeout != 0 || s.WriteTimeout != 0 {
		t.Error("read or write timeout set: it would cut /events and attach streams")
	}
}

func TestWritePidfile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "tether.pid")
	read := func() string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	self := strconv.Itoa(os.Getpid()) + "\n"
	if err := writePidfile(path); err != nil || read() != self {
		t.Fatalf("fresh: %v, file %q", err, read())
	}
	if err := writePidfile(path); err != nil || read() != self {
		t.Errorf("our own pid in it: %v", err)
	}
	for _, stale := range []string{"garbage\n", "999999999\n"} { // no such process
		if err := os.WriteFile(path, []byte(stale), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := writePidfile(path); err != nil || read() != self {
			t.Errorf("stale %q: %v, file %q", stale, err, read())
		}
	}

	// A live process whose executable is called tether: refused.
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		if gate.E2E() {
			t.Fatal("no sleep binary: TETHER_E2E=1 needs it for this test")
		}
		t.Skip("no sleep binary")
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(dir, "tether")
	if err := os.WriteFile(fake, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(fake, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	live := fmt.Sprintf("%d\n", cmd.Process.Pid)
	if err := os.WriteFile(path, []byte(live), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writePidfile(path); err == nil || !strings.Contains(err.Error(), "is another daemon running?") || read() != live {
		t.Errorf("live daemon's pid: %v, file %q; want a refusal and the file unchanged", err, read())
	}
}
