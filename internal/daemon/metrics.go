package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/engine"
	"github.com/tether-net/tether/internal/metrics"
	"github.com/tether-net/tether/internal/store"
)

// metricsFromEnv turns metrics off when TETHER_METRICS says so (a bench
// knob: it prices the metrics on the hot paths, bench/metrics).
func metricsFromEnv(log *slog.Logger) {
	if v := os.Getenv(metrics.EnvSwitch); metrics.OffByEnv(v) {
		metrics.SetOn(false)
		log.Info("metrics are off (" + metrics.EnvSwitch + "=" + v + "): nothing is counted and GET /metrics answers 404")
	}
}

// instrumentStore measures the cluster store (round trips, reachability,
// watch lag) unless metrics are off.
func instrumentStore(st store.Store) store.Store {
	if !metrics.On() {
		return st
	}
	m := metrics.InstrumentStore(st)
	if err := metrics.Register(m); err != nil {
		return st
	}
	return m
}

// serveMetrics opens the metrics-addr listener, when configured: plain
// HTTP serving GET /metrics only, as dockerd's. The returned stop closes
// it.
func serveMetrics(cfg *config.Config, eng *engine.Engine, log *slog.Logger) (stop func(), err error) {
	if cfg.MetricsAddr == "" {
		return func() {}, nil
	}
	l, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("metrics-addr: listen on %q: %w", cfg.MetricsAddr, err)
	}
	if ap, err := netip.ParseAddrPort(l.Addr().String()); err == nil && !ap.Addr().Unmap().IsLoopback() {
		log.Warn("metrics-addr serves metrics without authentication to anyone who can reach it (network and driver names, counts)", "addr", l.Addr().String())
	}
	m := http.NewServeMux()
	m.Handle("GET /metrics", api.MetricsHandler(eng))
	srv := newHTTPServer(m, log)
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics-addr listener stopped", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", l.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
