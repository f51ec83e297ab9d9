package daemon

// Docker's network and IPAM plugin (docker-plugin: true): two sockets
// beside each other, tether.sock (scope local) and tether-overlay.sock
// (scope global), served by internal/dockerplugin over the engine.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/dockerapi"
	"github.com/tether-net/tether/internal/dockerplugin"
	"github.com/tether-net/tether/internal/engine"
	"github.com/tether-net/tether/internal/nlutil"
	"github.com/tether-net/tether/internal/store"
)

// startDockerPlugin serves the plugin sockets until ctx ends; the returned
// func stops them and removes the socket files.
func startDockerPlugin(ctx context.Context, cfg *config.Config, eng *engine.Engine, st store.Store, log *slog.Logger) (func(), error) {
	if !cfg.DockerPlugin {
		return func() {}, nil
	}
	docker, err := dockerapi.New(cfg.DockerHost)
	if err != nil {
		return nil, fmt.Errorf("docker-host: %w", err)
	}
	p, err := dockerplugin.New(ctx, dockerplugin.Options{Backend: eng, Store: st, Docker: docker, Log: log,
		LocalDriver: defaultDriver, GlobalDriver: globalDriver})
	if err != nil {
		return nil, err
	}
	socks := []struct{ path, scope string }{
		{cfg.DockerPluginSocket, "local"},
		{filepath.Join(filepath.Dir(cfg.DockerPluginSocket), dockerplugin.NameGlobal+".sock"), "global"},
	}
	var srvs []*http.Server
	var paths []string
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, s := range srvs {
			_ = s.Shutdown(sctx)
		}
		for _, p := range paths {
			_ = os.Remove(p)
		}
	}
	for _, s := range socks {
		l, err := listenPluginSocket(s.path)
		if err != nil {
			stop()
			return nil, fmt.Errorf("docker-plugin-socket: %w", err)
		}
		paths = append(paths, s.path)
		srv := &http.Server{Handler: p.Handler(s.scope), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelInfo)}
		srvs = append(srvs, srv)
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("docker plugin socket", "socket", s.path, "err", err)
			}
		}()
		log.Info("Docker plugin listening", "socket", s.path, "scope", s.scope)
	}
	if cfg.DockerPluginDNS != "none" {
		if err := serveDockerDNS(cfg.DockerPluginDNS, eng, p); err != nil {
			log.Warn("Docker plugin: cannot answer names for Docker's resolver; containers will not resolve other hosts' names",
				"addr", cfg.DockerPluginDNS, "err", err)
		} else {
			log.Info("Docker plugin: answering Tether's names for Docker's resolver; dockerd's daemon.json needs \"dns\": [\""+cfg.DockerPluginDNS+"\"]",
				"addr", cfg.DockerPluginDNS+":53")
		}
	}
	go p.Run(ctx)
	return stop, nil
}

// listenPluginSocket makes the socket's directory and replaces a stale
// socket file (never a file of another kind).
func listenPluginSocket(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another process", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// serveDockerDNS answers Tether's names for Docker's resolver on addr, port
// 53. dockerd dials the upstreams of its daemon.json "dns" from the
// container's namespace, so the address must be one the containers route to
// the host: a loopback address is refused, anything else is put on the
// host's lo as a /32 (label lo:tether) and served to the sources of the
// networks of this host only (Plugin.AllowSource).
func serveDockerDNS(addr string, eng *engine.Engine, p *dockerplugin.Plugin) error {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return err
	}
	if a.IsLoopback() {
		return fmt.Errorf("%s is a loopback address: dockerd dials daemon.json \"dns\" from each container's namespace, where it is the container's own loopback", a)
	}
	if err := nlutil.EnsureLoopbackAddr(nil, a, "tether"); err != nil {
		return err
	}
	allow := func(src netip.Addr) bool { return src == a || p.AllowSource(src) }
	_, err = eng.ServeUpstream(addr, allow)
	return err
}
