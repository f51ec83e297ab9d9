package e2e

// Name resolution through the embedded resolver, with real queries from
// inside sandboxes: the miekg/dns client (run by the test in the sandbox's
// namespace) and getent (run in the sandbox). Upstream forwarding goes to a
// fake DNS server the test runs in its "outside" namespace, never a real one.

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

const fakeUpstream = outsideAddr // the outside namespace answers DNS on :53

// serveFakeDNS answers example.test A 203.0.113.7 and NXDOMAIN for the rest,
// on addr:53 inside namespace ns, until the test ends.
func serveFakeDNS(t *testing.T, ns, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := netns.Do("/run/netns/"+ns, func() (err error) {
		pc, err = net.ListenPacket("udp4", addr+":53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(q)
		if len(q.Question) == 1 && q.Question[0].Name == "example.test." && q.Question[0].Qtype == mdns.TypeA {
			rr, _ := mdns.NewRR("example.test. 60 IN A 203.0.113.7")
			m.Answer = append(m.Answer, rr)
		} else {
			m.Rcode = mdns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	srv := &mdns.Server{PacketConn: pc, Handler: h}
	go srv.ActivateAndServe()
	t.Cleanup(func() { _ = srv.Shutdown() })
}

// query asks the sandbox's resolver (127.0.0.11 inside its namespace).
func query(t *testing.T, nsPath, name string, qtype uint16, proto string) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	c := &mdns.Client{Net: proto, Timeout: 5 * time.Second}
	var r *mdns.Msg
	err := netns.Do(nsPath, func() (err error) {
		r, _, err = c.Exchange(m, "127.0.0.11:53")
		return err
	})
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", name, mdns.TypeToString[qtype], proto, err)
	}
	return r
}

func aRecords(r *mdns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

func dnsHost(t *testing.T, extra ...string) (string, *testutil.Daemon) {
	t.Helper()
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-dns")
	out := outside(t, ns)
	serveFakeDNS(t, out, fakeUpstream)
	return ns, testutil.StartDaemon(t, ns, append([]string{"--dns", fakeUpstream}, extra...)...)
}

func TestDNSNamesAliasesAndScope(t *testing.T) {
	_, d := dnsHost(t)
	d.MustTether("network", "create", "--subnet", "10.120.0.0/24", "app")
	d.MustTether("network", "create", "--subnet", "10.121.0.0/24", "other")
	d.MustTether("sandbox", "create", "--name", "web", "--network", "app", "--alias", "www")
	d.MustTether("sandbox", "create", "--name", "db", "--network", "app", "--alias", "www")
	d.MustTether("sandbox", "create", "--name", "client", "--network", "app")
	d.MustTether("sandbox", "create", "--name", "lonely", "--network", "other")
	d.MustTether("exec", "client", "--", "true") // the resolver starts with the first process
	cl := sandbox(t, d, "client").NetNS
	webIP, dbIP := ip(t, d, "web", "app"), ip(t, d, "db", "app")

	for _, name := range []string{"web", "web.app", "WEB.APP.", sandbox(t, d, "web").ID[:12]} {
		if got := aRecords(query(t, cl, name, mdns.TypeA, "udp")); len(got) != 1 || got[0] != webIP {
			t.Errorf("%s -> %v, want %s", name, got, webIP)
		}
	}
	r := query(t, cl, "www", mdns.TypeA, "udp")
	if got := strings.Join(aRecords(r), ","); got != webIP+","+dbIP && got != dbIP+","+webIP {
		t.Errorf("alias www -> %q, want both %s and %s", got, webIP, dbIP)
	}
	if len(r.Answer) > 0 && r.Answer[0].Header().Ttl == 0 {
		t.Error("answers carry no TTL")
	}
	rev, _ := mdns.ReverseAddr(webIP)
	if p := query(t, cl, rev, mdns.TypePTR, "udp"); len(p.Answer) != 1 || p.Answer[0].(*mdns.PTR).Ptr != "web.app." {
		t.Errorf("PTR %s -> %v", rev, p.Answer)
	}
	if r := query(t, cl, "lonely", mdns.TypeA, "udp"); len(aRecords(r)) != 0 || r.Rcode != mdns.RcodeNameError {
		t.Errorf("a name on another network resolved: rcode %d %v", r.Rcode, r.Answer)
	}
	if r := query(t, cl, "web", mdns.TypeMX, "udp"); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("MX for a local name: rcode %d %v, want empty NOERROR", r.Rcode, r.Answer)
	}
	// getent in the sandbox goes through its resolv.conf.
	if out := d.MustTether("exec", "client", "--", "getent", "hosts", "web.app"); !strings.HasPrefix(out, webIP) {
		t.Errorf("getent hosts web.app = %q", out)
	}
	rc := d.MustTether("exec", "client", "--", "cat", "/etc/resolv.conf")
	if !strings.Contains(rc, "nameserver 127.0.0.11") || !strings.Contains(rc, "ndots:0") {
		t.Errorf("resolv.conf of a user-network sandbox:\n%s", rc)
	}

	// Names follow connect, disconnect and rm at once.
	d.MustTether("network", "connect", "app", "lonely")
	if got := aRecords(query(t, cl, "lonely", mdns.TypeA, "udp")); len(got) != 1 {
		t.Errorf("after connect, lonely -> %v", got)
	}
	d.MustTether("network", "disconnect", "app", "lonely")
	if got := aRecords(query(t, cl, "lonely", mdns.TypeA, "udp")); len(got) != 0 {
		t.Errorf("after disconnect, lonely -> %v", got)
	}
	d.MustTether("rm", "db")
	if got := aRecords(query(t, cl, "www", mdns.TypeA, "udp")); len(got) != 1 || got[0] != webIP {
		t.Errorf("after rm db, www -> %v", got)
	}
	if got := aRecords(query(t, cl, "db", mdns.TypeA, "udp")); len(got) != 0 {
		t.Errorf("stale answer after rm: db -> %v", got)
	}
}

func TestDNSForwardingAndDefaultBridge(t *testing.T) {
	_, d := dnsHost(t)
	d.MustTether("network", "create", "--subnet", "10.122.0.0/24", "app")
	d.MustTether("sandbox", "create", "--name", "c", "--network", "app")
	d.MustTether("exec", "c", "--", "true")
	cl := sandbox(t, d, "c").NetNS
	if got := aRecords(query(t, cl, "example.test", mdns.TypeA, "udp")); len(got) != 1 || got[0] != "203.0.113.7" {
		t.Errorf("forwarded example.test -> %v", got)
	}
	if r := query(t, cl, "nothing.test", mdns.TypeA, "udp"); r.Rcode != mdns.RcodeNameError {
		t.Errorf("forwarded NXDOMAIN came back as rcode %d", r.Rcode)
	}
	// The default bridge: the configured resolvers, no embedded resolver.
	d.MustTether("sandbox", "create", "--name", "plain")
	rc := d.MustTether("exec", "plain", "--", "cat", "/etc/resolv.conf")
	if !strings.Contains(rc, "nameserver "+fakeUpstream) || strings.Contains(rc, "127.0.0.11") {
		t.Errorf("default-bridge resolv.conf:\n%s", rc)
	}
}

func TestDNSUpstreamDownTCPAndMalformed(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-dns")
	outside(t, ns) // reachable, but nothing answers DNS on .9
	d := testutil.StartDaemon(t, ns, "--dns", "198.51.100.9")
	d.MustTether("network", "create", "--subnet", "10.123.0.0/24", "app")
	for i := range 40 {
		d.MustTether("sandbox", "create", "--name", fmt.Sprintf("m%d", i), "--network", "app", "--alias", "many")
	}
	d.MustTether("exec", "m0", "--", "true")
	cl := sandbox(t, d, "m0").NetNS

	start := time.Now()
	if r := query(t, cl, "example.test", mdns.TypeA, "udp"); r.Rcode != mdns.RcodeServerFailure {
		t.Errorf("upstream down: rcode %d, want SERVFAIL", r.Rcode)
	}
	t.Logf("SERVFAIL after %v", time.Since(start).Round(time.Millisecond))
	if got := aRecords(query(t, cl, "m1", mdns.TypeA, "udp")); len(got) != 1 {
		t.Errorf("local names stopped answering after an upstream failure: %v", got)
	}

	udp := query(t, cl, "many", mdns.TypeA, "udp")
	if !udp.Truncated {
		t.Errorf("40 addresses over UDP (512-byte client): not truncated, %d answers", len(udp.Answer))
	}
	if got := aRecords(query(t, cl, "many", mdns.TypeA, "tcp")); len(got) != 40 {
		t.Errorf("over TCP: %d addresses, want 40", len(got))
	}

	if err := netns.Do(cl, func() error {
		c, err := net.Dial("udp4", "127.0.0.11:53")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := aRecords(query(t, cl, "m2", mdns.TypeA, "udp")); len(got) != 1 {
		t.Errorf("after a malformed packet: %v", got)
	}
}
