package e2e

// Prometheus metrics of the real daemon, scraped with the Prometheus text
// parser: they change as sandboxes attach and detach, as DNS queries are
// answered (locally, forwarded, NXDOMAIN), as operations fail, as another
// program flushes the firewall, and as the cluster store goes away and
// comes back; the metrics-addr listener serves
// them (and nothing else) under every start mode and across a restart; a
// bad metrics-addr stops the start with an error naming the key.

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// scrape is one exposition, parsed.
type scrape map[string]*dto.MetricFamily

func parseExposition(t *testing.T, body string) scrape {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse the exposition: %v\n%s", err, body)
	}
	return mfs
}

// scrapeAPI reads GET /metrics of d's API.
func scrapeAPI(t *testing.T, d *testutil.Daemon) scrape {
	t.Helper()
	code, body := newAPI(t, d).call("GET", "/metrics", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	return parseExposition(t, body)
}

// get is the value of metric name whose labels include want: a counter's
// or gauge's value, a histogram's sample count; summed over the matching
// series; 0 when none matches.
func (s scrape) get(name string, want ...string) float64 {
	mf := s[name]
	if mf == nil {
		return 0
	}
	var sum float64
	for _, m := range mf.GetMetric() {
		if !hasLabels(m, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// hasLabels: m carries every name=value pair of want ("name", "value", ...).
func hasLabels(m *dto.Metric, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == want[i] && l.GetValue() == want[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// metricsHost is a daemon in a t20m namespace with the fake upstream DNS
// of dns_test.go in its outside namespace.
func metricsHost(t *testing.T, args ...string) (string, *testutil.Daemon) {
	t.Helper()
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "t20m")
	serveFakeDNS(t, outside(t, ns), fakeUpstream)
	return ns, testutil.StartDaemon(t, ns, append([]string{"--dns", fakeUpstream}, args...)...)
}

func TestMetricsFollowAttachesDNSAndErrors(t *testing.T) {
	ns, d := metricsHost(t)
	before := scrapeAPI(t, d)
	d.MustTether("network", "create", "--subnet", "10.124.0.0/24", "mnet")
	d.MustTether("sandbox", "create", "--name", "web", "--network", "mnet", "-p", "127.0.0.1:47080:80")
	d.MustTether("sandbox", "create", "--name", "client", "--network", "mnet")
	d.MustTether("exec", "client", "--", "true") // the resolver starts with the first process
	if out, err := d.Tether("network", "connect", "no-such-net", "web"); err == nil {
		t.Fatalf("connect to a missing network succeeded: %s", out)
	}
	cl := sandbox(t, d, "client").NetNS
	for _, q := range []struct {
		name  string
		rcode int
	}{{"web", mdns.RcodeSuccess}, {"example.test", mdns.RcodeSuccess}, {"nothing.test", mdns.RcodeNameError}} {
		if r := query(t, cl, q.name, mdns.TypeA, "udp"); r.Rcode != q.rcode {
			t.Fatalf("%s: rcode %s, want %s", q.name, mdns.RcodeToString[r.Rcode], mdns.RcodeToString[q.rcode])
		}
	}
	if r := query(t, cl, "web", mdns.TypeA, "tcp"); r.Rcode != mdns.RcodeSuccess {
		t.Fatalf("web over TCP: rcode %s", mdns.RcodeToString[r.Rcode])
	}
	mid := scrapeAPI(t, d)
	d.MustTether("network", "disconnect", "mnet", "client")
	after := scrapeAPI(t, d)

	delta := func(s scrape, name string, labels ...string) float64 {
		return s.get(name, labels...) - before.get(name, labels...)
	}
	for _, c := range []struct {
		what      string
		got, want float64
	}{
		{"attaches timed (bridge)", delta(mid, "tether_attach_duration_seconds", "driver", "bridge"), 2},
		{"sandbox creates", delta(mid, "tether_operations_total", "op", "sandbox_create"), 2},
		{"network creates", delta(mid, "tether_operations_total", "op", "network_create"), 1},
		{"connects failed not_found", delta(mid, "tether_operation_errors_total", "op", "connect", "kind", "not_found"), 1},
		{"endpoints (bridge)", delta(mid, "tether_endpoints", "driver", "bridge"), 2},
		{"networks (bridge)", delta(mid, "tether_networks", "driver", "bridge"), 1},
		{"mnet addresses used", mid.get("tether_network_addresses", "network", "mnet", "family", "ipv4", "state", "used"), 2},
		{"mnet addresses free", mid.get("tether_network_addresses", "network", "mnet", "family", "ipv4", "state", "free"), 251},
		{"published tcp ports held", delta(mid, "tether_published_ports", "proto", "tcp"), 1},
		{"local DNS answers", delta(mid, "tether_dns_query_duration_seconds", "outcome", "local"), 2},
		{"forwarded DNS answers", delta(mid, "tether_dns_query_duration_seconds", "outcome", "forwarded"), 1},
		{"NXDOMAIN DNS answers", delta(mid, "tether_dns_query_duration_seconds", "outcome", "nxdomain"), 1},
		{"DNS forwards in flight after the answers", mid.get("tether_dns_forwards_in_flight"), 0},
		{"detaches timed (bridge)", delta(after, "tether_detach_duration_seconds", "driver", "bridge"), 1},
		{"endpoints after the disconnect", delta(after, "tether_endpoints", "driver", "bridge"), 1},
		{"mnet addresses used after the disconnect", after.get("tether_network_addresses", "network", "mnet", "family", "ipv4", "state", "used"), 1},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	if got := delta(mid, "tether_firewall_batches_total"); got < 1 {
		t.Errorf("firewall batches: %v after a network and a published port, want at least 1", got)
	}
	// another program flushes the ruleset: the table is restored, and counted
	restores0 := after.get("tether_firewall_restores_total")
	testutil.Must(t, "ip", "netns", "exec", ns, "nft", "flush", "ruleset")
	waitFor(t, "a firewall restore counted", 10*time.Second, func() bool {
		return scrapeAPI(t, d).get("tether_firewall_restores_total") >= restores0+1
	})
	for name, mf := range after {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), sandbox(t, d, "web").ID[:12]) {
					t.Errorf("%s carries a sandbox ID in label %s", name, l.GetName())
				}
			}
		}
	}
}

// getIn fetches http://addr/path from inside namespace ns.
func getIn(t *testing.T, ns, addr, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: testutil.NSDialer(ns, addr)}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s%s in %s: %v", addr, path, ns, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The metrics-addr listener (flag and daemon.json) serves GET /metrics only,
// under every start mode and again after a restart.
func TestMetricsAddrListener(t *testing.T) {
	forModes(t, func(t *testing.T, mode testutil.StartMode) {
		testutil.RequireRoot(t)
		ns := testutil.NetNS(t, "t20m")
		flagAddr, fileAddr := "127.0.0.1:47101", "127.0.0.1:47102"
		d := testutil.NewDaemon(t, ns, "--metrics-addr", flagAddr)
		d.Mode = mode
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
		d.MustTether("network", "create", "--subnet", "10.125.0.0/24", "lnet")
		check := func(addr string) {
			t.Helper()
			code, body := getIn(t, ns, addr, "/metrics")
			if code != http.StatusOK {
				t.Fatalf("GET /metrics on %s: %d %s", addr, code, body)
			}
			s := parseExposition(t, body)
			if s.get("tether_networks", "driver", "bridge") < 2 { // bridge, lnet
				t.Errorf("%s: tether_networks{driver=bridge} = %v, want at least 2", addr, s.get("tether_networks", "driver", "bridge"))
			}
			if code, _ := getIn(t, ns, addr, "/_ping"); code != http.StatusNotFound {
				t.Errorf("%s serves /_ping (%d): it must serve /metrics only", addr, code)
			}
			if code, _ := getIn(t, ns, addr, "/networks"); code != http.StatusNotFound {
				t.Errorf("%s serves /networks (%d): it must serve /metrics only", addr, code)
			}
		}
		check(flagAddr)
		restart(t, d)
		check(flagAddr)
		// the same from daemon.json
		d.Stop()
		d.Args = nil
		d.Config = `{"metrics-addr": "` + fileAddr + `"}`
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
		check(fileAddr)
		if _, err := testutil.DialInNS(context.Background(), ns, "tcp", flagAddr); err == nil {
			t.Errorf("%s still listens after a restart without it", flagAddr)
		}
	})
}

// A bad metrics-addr, or one that cannot be bound, stops the start with an
// error naming the key; TETHER_METRICS=0 turns the metrics off.
func TestMetricsAddrRefusedAndOff(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "t20m")
	busy := "127.0.0.1:47110"
	var l net.Listener
	if err := netns.Do("/run/netns/"+ns, func() (err error) {
		l, err = net.Listen("tcp", busy)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		name   string
		args   []string
		config string
		want   string
	}{
		{"no port", []string{"--metrics-addr", "127.0.0.1"}, "", `metrics-addr: "127.0.0.1" is not host:port`},
		{"port zero", []string{"--metrics-addr", "127.0.0.1:0"}, "", `metrics-addr: "127.0.0.1:0": port "0"`},
		{"bad host in daemon.json", nil, `{"metrics-addr": "bad_host!:47111"}`, `metrics-addr: "bad_host!:47111"`},
		{"not a string in daemon.json", nil, `{"metrics-addr": 47111}`, `metrics-addr`},
		{"port taken", []string{"--metrics-addr", busy}, "", `metrics-addr: listen on "` + busy + `"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := testutil.NewDaemon(t, ns, tc.args...)
			d.Config = tc.config
			out, err := d.Fails()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("output does not contain %q:\n%s", tc.want, out)
			}
		})
	}
	t.Run("off", func(t *testing.T) {
		d := testutil.NewDaemon(t, ns)
		d.Env = []string{"TETHER_METRICS=0"}
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
		code, body := newAPI(t, d).call("GET", "/metrics", nil)
		if code != http.StatusNotFound || !strings.Contains(body, "TETHER_METRICS") {
			t.Errorf("GET /metrics with TETHER_METRICS=0: %d %s, want 404 naming TETHER_METRICS", code, body)
		}
		d.MustTether("network", "create", "--subnet", "10.126.0.0/24", "offnet") // the daemon works
	})
}

// The cluster store's metrics on a two-host etcd cluster: round trips and
// the watch delay of this node's writes are measured, the peers of an
// overlay counted; the reachability gauge drops to 0 while etcd is
// stopped and comes back to 1 after it restarts.
func TestMetricsClusterStoreOutage(t *testing.T) {
	m := newMultiHostIn(t, "etcd", 2, testutil.StartNsenter)
	h1, h2 := m.d[0], m.d[1]
	h1.MustTether("network", "create", "-d", "overlay", "--subnet", "10.8.0.0/24", "mover")
	waitFor(t, "network on host 2", 10*time.Second, func() bool { return netID(h2, "mover") != "" })
	h1.MustTether("run", "-d", "--name", "a", "--network", "mover", "--", "sleep", "600")
	h2.MustTether("run", "-d", "--name", "b", "--network", "mover", "--", "sleep", "600")
	waitFor(t, "host 1 counts b as a peer", 10*time.Second, func() bool {
		return scrapeAPI(t, h1).get("tether_overlay_peers", "network", "mover") == 1
	})
	s := scrapeAPI(t, h1)
	if got := s.get("tether_cluster_store_up"); got != 1 {
		t.Errorf("store up = %v with etcd running", got)
	}
	for _, op := range []string{"txn", "list", "watch"} {
		if s.get("tether_cluster_store_request_duration_seconds", "op", op) < 1 {
			t.Errorf("no %s round trip measured", op)
		}
	}
	waitFor(t, "a lease keep-alive round trip measured (one per TTL/3)", 10*time.Second, func() bool {
		return scrapeAPI(t, h1).get("tether_cluster_store_request_duration_seconds", "op", "keepalive") >= 1
	})
	if s.get("tether_cluster_watch_delay_seconds") < 1 {
		t.Error("no watch delay measured after this node's writes")
	}
	if got := s.get("tether_attach_duration_seconds", "driver", "overlay"); got != 1 {
		t.Errorf("overlay attaches timed: %v, want 1", got)
	}
	errs0 := s.get("tether_cluster_store_request_errors_total")

	m.store.Stop()
	waitFor(t, "store down in the metrics", 20*time.Second, func() bool {
		return scrapeAPI(t, h1).get("tether_cluster_store_up") == 0
	})
	if got := scrapeAPI(t, h1).get("tether_cluster_store_request_errors_total") - errs0; got < 1 {
		t.Errorf("store errors counted during the outage: %v", got)
	}
	m.store.Start()
	waitFor(t, "store up again in the metrics", 30*time.Second, func() bool {
		return scrapeAPI(t, h1).get("tether_cluster_store_up") == 1
	})
	h1.MustTether("run", "-d", "--name", "after", "--network", "mover", "--", "sleep", "600")
	waitFor(t, "the watch caught up with this node's writes (lag 0)", 10*time.Second, func() bool {
		return scrapeAPI(t, h1).get("tether_cluster_watch_lag_seconds") == 0
	})
}
