// Package daemon wires the configuration, store, engine and API together and
// runs until a signal arrives. Stopping the daemon leaves every network and
// sandbox in place (live restore): the next start picks them up again.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/engine"
	"github.com/tether-net/tether/internal/firewall"
	"github.com/tether-net/tether/internal/listen"
	"github.com/tether-net/tether/internal/store/bolt"
)

// Run starts the daemon with cfg and blocks until SIGINT or SIGTERM.
func Run(cfg *config.Config) error {
	log := newLogger(cfg)
	metricsFromEnv(log) // metrics.go
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	lopts, err := listenOptions(cfg, log)
	if err != nil {
		return err
	}
	if err := writePidfile(cfg.Pidfile); err != nil {
		return err
	}
	defer os.Remove(cfg.Pidfile)
	if err := setupForwarding(cfg, log); err != nil {
		return err
	}
	fw, err := newFirewall(cfg, log)
	if err != nil {
		return err
	}
	if c, ok := fw.(io.Closer); ok {
		defer c.Close()
	}
	st, err := bolt.Open(filepath.Join(cfg.DataRoot, "tether.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	rt, err := openRuntimeStore(cfg.ExecRoot, log)
	if err != nil {
		return err
	}
	defer rt.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cl, closeCluster, err := openCluster(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeCluster()
	nodeFilter, err := openVXLANGuard(cfg, cl)
	if err != nil {
		return err
	}
	eng, err := engine.New(engine.Options{Config: cfg, Store: st, Runtime: rt, Logger: log, Firewall: fw, Cluster: cl, NodeFilter: nodeFilter,
		Drivers: drivers(cfg), DefaultDriver: defaultDriver, IPv6Forwarding: ipv6Forwarding(cfg, log), Linker: linker()})
	if err != nil {
		return err
	}
	start := time.Now()
	defer eng.Close()
	if err := eng.Start(ctx); err != nil {
		return err
	}
	log.Info("engine ready", "took", time.Since(start).Round(time.Microsecond), "networks", len(eng.Networks()), "sandboxes", len(eng.Sandboxes()))
	var also []firewall.Repairer
	if r, ok := nodeFilter.(firewall.Repairer); ok && r != nil {
		also = append(also, r)
	}
	stopFW, err := watchFirewall(ctx, fw, cfg, log, also...)
	if err != nil {
		return err
	}
	defer stopFW()
	stopPlugin, err := startDockerPlugin(ctx, cfg, eng, st, log)
	if err != nil {
		return err
	}
	defer stopPlugin()
	stopMetrics, err := serveMetrics(cfg, eng, log) // metrics.go
	if err != nil {
		return err
	}
	defer stopMetrics()
	return serve(ctx, cfg.Hosts, lopts, eng, cfg.Debug, log)
}

const ipForwardSysctl = "/proc/sys/net/ipv4/ip_forward"

// setupForwarding turns IPv4 forwarding on (ip-forward: true), or leaves it
// alone and says what that means (ip-forward: false).
func setupForwarding(cfg *config.Config, log *slog.Logger) error {
	if cfg.IPForward {
		if err := os.WriteFile(ipForwardSysctl, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("enable IPv4 forwarding (ip-forward): %w", err)
		}
		return nil
	}
	b, err := os.ReadFile(ipForwardSysctl)
	if err != nil || strings.TrimSpace(string(b)) != "1" {
		log.Warn("ip-forward is false and IPv4 forwarding is off (net.ipv4.ip_forward=0): Tether leaves it alone, and sandboxes reach only their networks and the host, not the outside, until it is turned on")
	}
	return nil
}

// ipv6Forwarding is what the engine calls before its first network with
// IPv6: with ip-forward, IPv6 forwarding on (all and default), as Docker
// does; a host that takes router advertisements on an interface with
// accept_ra=1 stops taking them once it forwards, which is said. Without
// ip-forward, a warning when forwarding is off.
func ipv6Forwarding(cfg *config.Config, log *slog.Logger) func() error {
	const all = "/proc/sys/net/ipv6/conf/all/forwarding"
	return func() error {
		b, err := os.ReadFile(all)
		if err != nil {
			return fmt.Errorf("IPv6 forwarding: the kernel has no IPv6 (%w)", err)
		}
		if strings.TrimSpace(string(b)) == "1" {
			return nil
		}
		if !cfg.IPForward {
			log.Warn("ip-forward is false and IPv6 forwarding is off (net.ipv6.conf.all.forwarding=0): IPv6 sandboxes reach only their networks and the host")
			return nil
		}
		for _, k := range []string{"default", "all"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/forwarding", []byte("1"), 0o644); err != nil {
				return fmt.Errorf("enable IPv6 forwarding (ip-forward): %w", err)
			}
		}
		log.Warn("turned IPv6 forwarding on for a network with IPv6 (ip-forward): interfaces with accept_ra=1 no longer take router advertisements; set accept_ra=2 on an uplink that needs them")
		return nil
	}
}

// newFirewall returns the nftables firewall, or none for iptables=false.
func newFirewall(cfg *config.Config, log *slog.Logger) (firewall.Firewall, error) {
	if !cfg.IPTables {
		log.Info("iptables is false: Tether installs no firewall rules (no NAT, no isolation between networks)")
		return firewall.Noop{}, nil
	}
	// Without the userland proxy the kernel serves loopback connections to
	// published ports too (route_localnet and a scoped masquerade).
	fw, err := firewall.NewNFTWith(firewall.Options{LoopbackDNAT: !cfg.UserlandProxy, AllowDirectRouting: cfg.AllowDirectRouting, IPv6: cfg.IP6Tables})
	if err != nil {
		return nil, fmt.Errorf("firewall: %w (iptables=false runs without firewall rules)", err)
	}
	return fw, nil
}

// API server limits. There is no ReadTimeout or WriteTimeout: /events and
// attach/exec streams (hijacked connections) last as long as the client
// wants. A client must send its request headers (after the TLS handshake,
// which the same limit bounds) within readHeaderTimeout, so a slow or silent
// client holds one connection for that long and no more; an idle keep-alive
// connection is closed after idleTimeout.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
)

// listenOptions prepares the listeners before anything else is set up: the
// certificates are read (a bad file stops the start early) and sockets
// passed by systemd are taken, so no process started meanwhile inherits
// them.
func listenOptions(cfg *config.Config, log *slog.Logger) (listen.Options, error) {
	o := listen.Options{Group: cfg.Group, PlainTCP: cfg.PlainTCP(), Log: log, Activation: listen.TakeActivation()}
	if err := o.Activation.Check(cfg.Hosts); err != nil {
		return o, err
	}
	if !cfg.TLSOn() {
		return o, nil
	}
	files := listen.TLSFiles{CA: cfg.TLSCACert, Cert: cfg.TLSCert, Key: cfg.TLSKey}
	var err error
	o.TLS, err = listen.ServerTLS(files, cfg.VerifyClients())
	return o, err
}

func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelInfo), // TLS handshake failures, header timeouts
	}
}

// serve opens the listeners of hosts and serves the API on them until ctx
// ends. Unix sockets the daemon created are removed when it stops; sockets
// systemd passed (fd://) are left to systemd.
func serve(ctx context.Context, hosts []string, lopts listen.Options, eng *engine.Engine, debug bool, log *slog.Logger) error {
	ls, err := listen.Open(hosts, lopts)
	if err != nil {
		return err
	}
	defer listen.CloseAll(ls)
	a := api.New(eng, log)
	srv := newHTTPServer(withDebug(a, debug), log)
	srv.RegisterOnShutdown(a.CloseStreams)
	errc := make(chan error, len(ls))
	for _, l := range ls {
		log.Info("API listening", "host", l.Host, "addr", l.Addr().String(), "security", l.Security)
		go func(l net.Listener) { errc <- srv.Serve(l) }(l)
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down; networks and sandboxes stay in place")
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve API: %w", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

func newLogger(cfg *config.Config) *slog.Logger {
	var lvl slog.Level
	switch cfg.LogLevel {
	case "debug":
		lvl = slog.LevelDebug
	case "warn":
		lvl = slog.LevelWarn
	case "error", "fatal":
		lvl = slog.LevelError
	}
	l := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(l)
	return l
}

// writePidfile refuses to start when the pidfile names a live daemon.
func writePidfile(path string) error {
	if b, err := os.ReadFile(path); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != os.Getpid() {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); strings.Contains(filepath.Base(exe), "tether") {
					return fmt.Errorf("pidfile %s names running process %d: is another daemon running?", path, pid)
				}
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("pidfile directory: %w", err)
	}
	return os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
}
