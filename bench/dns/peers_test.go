package dns

// The peers of the dns scenario and its second load generator: CoreDNS with
// its hosts plugin and dnsmasq, each serving the same names from a hosts
// file at 127.0.0.11:53 in a namespace of its own (started by the test and
// killed at its end: nothing runs as a service), and Debian's dnsperf run
// inside the namespace of the server it measures (nsenter --net). A peer
// whose binary is missing is left out and its absence recorded; install
// them with bench/dns/refs.sh.

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// corednsBin is BENCH_COREDNS, else refs.sh's install, else coredns on
// PATH; "" when none exists.
func corednsBin() string {
	for _, p := range []string{os.Getenv("BENCH_COREDNS"), filepath.Join(envOr("TETHER_BENCH_REFS", "/opt/tether-bench"), "coredns", "coredns")} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	p, _ := exec.LookPath("coredns")
	return p
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// hostsFile writes names (with their final dot dropped) and addrs in
// /etc/hosts form into dir.
func hostsFile(tb testing.TB, dir string, names []string, addrs []netip.Addr) string {
	tb.Helper()
	var b strings.Builder
	for i, n := range names {
		fmt.Fprintf(&b, "%s %s\n", addrs[i], strings.TrimSuffix(n, "."))
	}
	p := filepath.Join(dir, "hosts")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// startPeer runs argv in a fresh namespace (nsenter --net) and waits until
// it answers names[0]; it returns the namespace's path. The process is
// killed at the end of the test.
func startPeer(tb testing.TB, system string, names []string, argv ...string) string {
	tb.Helper()
	ns := testutil.NetNS(tb, "t19e-"+system)
	path := "/run/netns/" + ns
	cmd := exec.Command("nsenter", append([]string{"--net=" + path, "--"}, argv...)...)
	log := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		tb.Fatalf("%s: %v", system, err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for range 100 {
		var err error
		_ = netns.Do(path, func() error {
			c := &mdns.Client{Timeout: 200 * time.Millisecond}
			var r *mdns.Msg
			r, _, err = c.Exchange(new(mdns.Msg).SetQuestion(names[0], mdns.TypeA), resolverAddr)
			if err == nil && len(r.Answer) != 1 {
				err = fmt.Errorf("answer %v", r)
			}
			return nil
		})
		if err == nil {
			return path
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("%s does not answer %s:\n%s", system, names[0], log.String())
	return ""
}

// startCoreDNS serves names with CoreDNS's hosts plugin (no reload, no
// reverse zone, TTL 600, no other plugin) on 127.0.0.11:53.
func startCoreDNS(tb testing.TB, bin string, names []string, addrs []netip.Addr) string {
	tb.Helper()
	dir := tb.TempDir()
	hosts := hostsFile(tb, dir, names, addrs)
	conf := filepath.Join(dir, "Corefile")
	corefile := fmt.Sprintf(".:53 {\n\tbind 127.0.0.11\n\thosts %s {\n\t\tttl 600\n\t\treload 0\n\t\tno_reverse\n\t}\n}\n", hosts)
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		tb.Fatal(err)
	}
	return startPeer(tb, "coredns", names, bin, "-conf", conf, "-quiet")
}

// startDnsmasq serves names from a hosts file with dnsmasq on
// 127.0.0.11:53: no upstream, no /etc/hosts, no cache of other names.
func startDnsmasq(tb testing.TB, bin string, names []string, addrs []netip.Addr) string {
	tb.Helper()
	dir := tb.TempDir()
	hosts := hostsFile(tb, dir, names, addrs)
	return startPeer(tb, "dnsmasq", names, bin, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--addn-hosts="+hosts, "--listen-address=127.0.0.11", "--bind-interfaces", "--port=53", "--user=root",
		"--pid-file="+filepath.Join(dir, "pid"), "--local-ttl=600")
}

// Perf is one dnsperf run.
type Perf struct {
	System    string  `json:"system"`
	Client    string  `json:"client"` // "dnsperf"
	Sent      int     `json:"queries_sent"`
	Completed int     `json:"queries_completed"`
	Lost      int     `json:"queries_lost"`
	NoError   int     `json:"noerror"`
	QPS       float64 `json:"qps"`
	AvgLatMS  float64 `json:"avg_latency_ms"`
	Args      string  `json:"args"`
}

var perfLine = regexp.MustCompile(`^\s*(Queries sent|Queries completed|Queries lost|Response codes|Queries per second|Average Latency \(s\)):\s*(.*)$`)

// dnsperf runs Debian's dnsperf in namespace nsPath against 127.0.0.11
// for d, asking the names in turn (A), with the given clients (sockets)
// and threads.
func dnsperf(tb testing.TB, system, nsPath string, names []string, d time.Duration, clients, threads int) Perf {
	tb.Helper()
	qf := filepath.Join(tb.TempDir(), "queries")
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s A\n", n)
	}
	if err := os.WriteFile(qf, []byte(b.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	args := []string{"-s", "127.0.0.11", "-d", qf, "-l", strconv.Itoa(max(1, int(d.Seconds()))), "-c", strconv.Itoa(clients), "-T", strconv.Itoa(threads), "-t", "2"}
	out, err := exec.Command("nsenter", append([]string{"--net=" + nsPath, "--", "dnsperf"}, args...)...).CombinedOutput()
	if err != nil {
		tb.Fatalf("dnsperf against %s: %v\n%s", system, err, out)
	}
	p := Perf{System: system, Client: "dnsperf", Args: strings.Join(args, " ")}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		m := perfLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		first := strings.Fields(m[2])
		switch m[1] {
		case "Queries sent":
			p.Sent, _ = strconv.Atoi(first[0])
		case "Queries completed":
			p.Completed, _ = strconv.Atoi(first[0])
		case "Queries lost":
			p.Lost, _ = strconv.Atoi(first[0])
		case "Response codes":
			for i, f := range first {
				if f == "NOERROR" && i+1 < len(first) {
					p.NoError, _ = strconv.Atoi(first[i+1])
				}
			}
		case "Queries per second":
			p.QPS, _ = strconv.ParseFloat(first[0], 64)
		case "Average Latency (s)":
			v, _ := strconv.ParseFloat(first[0], 64)
			p.AvgLatMS = v * 1000
		}
	}
	if p.Completed == 0 {
		tb.Fatalf("dnsperf against %s: no query completed\n%s", system, out)
	}
	return p
}
