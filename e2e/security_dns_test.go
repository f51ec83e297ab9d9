package e2e

// Attacks on the embedded resolver (issue 13, attacks 3 and 7), replayed
// with real packets from inside sandboxes against a daemon whose upstream is
// a recording fake DNS server in the test's "outside" namespace:
//
//   - DNS exfiltration from --internal networks (CVE-2024-29018): a sandbox
//     whose networks are all internal must not get any name forwarded.
//   - Resolver abuse (aardvark-dns CVE-2026-35406, miekg/dns#631,
//     moby/libnetwork#2082): idle and half-sent TCP connections, truncated
//     TCP queries followed by a reset, floods of forwarded queries; another
//     sandbox keeps resolving throughout.

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// upstreamLog is a fake upstream DNS server that records every name it is
// asked. Names under blackhole.test. are never answered, names under
// slow.test. are answered after a second, the rest get A 203.0.113.7.
type upstreamLog struct {
	mu    sync.Mutex
	names []string
	total atomic.Int64
}

func (u *upstreamLog) saw(name string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, n := range u.names {
		if strings.EqualFold(n, mdns.Fqdn(name)) {
			return true
		}
	}
	return false
}

// serveRecordingDNS runs an upstreamLog on addr:53, UDP and TCP, inside
// namespace ns until the test ends.
func serveRecordingDNS(t *testing.T, ns, addr string) *upstreamLog {
	t.Helper()
	u := &upstreamLog{}
	var pc net.PacketConn
	var ln net.Listener
	if err := netns.Do("/run/netns/"+ns, func() (err error) {
		if pc, err = net.ListenPacket("udp4", addr+":53"); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", addr+":53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		if len(q.Question) != 1 {
			return
		}
		name := strings.ToLower(q.Question[0].Name)
		u.total.Add(1)
		u.mu.Lock()
		if len(u.names) < 100000 {
			u.names = append(u.names, name)
		}
		u.mu.Unlock()
		switch {
		case strings.HasSuffix(name, ".blackhole.test."):
			return
		case strings.HasSuffix(name, ".slow.test."):
			time.Sleep(time.Second)
		}
		m := new(mdns.Msg).SetReply(q)
		if q.Question[0].Qtype == mdns.TypeA {
			rr, _ := mdns.NewRR(q.Question[0].Name + " 60 IN A 203.0.113.7")
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	})
	for _, s := range []*mdns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go s.ActivateAndServe()
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return u
}

// tryQuery asks 127.0.0.11 inside nsPath and returns the answer or the error.
func tryQuery(nsPath, name string, proto string) (*mdns.Msg, error) {
	m := new(mdns.Msg).SetQuestion(mdns.Fqdn(name), mdns.TypeA)
	c := &mdns.Client{Net: proto, Timeout: 3 * time.Second}
	var r *mdns.Msg
	err := netns.Do(nsPath, func() (err error) {
		r, _, err = c.Exchange(m, "127.0.0.11:53")
		return err
	})
	return r, err
}

// secDNSHost starts a daemon (in mode) whose only upstream is a recording
// fake.
func secDNSHost(t *testing.T, mode testutil.StartMode) (*testutil.Daemon, *upstreamLog) {
	t.Helper()
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-sdns")
	out := outside(t, ns)
	up := serveRecordingDNS(t, out, outsideAddr)
	d := testutil.NewDaemon(t, ns, "--dns", outsideAddr)
	d.Mode = mode
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	return d, up
}

// TestSecurityDNSInternalNoExfil: CVE-2024-29018. A sandbox attached only
// to --internal networks asks secret-data.example.com: before the fix the
// daemon forwarded it from the host's namespace and the upstream saw it.
// The restart at the end runs under nsenter and ip netns exec (a new mount
// namespace per start), so the sandboxes run a process and are reached
// through it.
func TestSecurityDNSInternalNoExfil(t *testing.T) {
	for _, mode := range []testutil.StartMode{testutil.StartNsenter, testutil.StartIPNetns} {
		t.Run(string(mode), func(t *testing.T) { internalNoExfil(t, mode) })
	}
}

func internalNoExfil(t *testing.T, mode testutil.StartMode) {
	d, up := secDNSHost(t, mode)
	d.MustTether("network", "create", "--internal", "--subnet", "10.180.0.0/24", "sealed")
	d.MustTether("network", "create", "--internal", "--subnet", "10.180.1.0/24", "sealed2")
	d.MustTether("network", "create", "--subnet", "10.181.0.0/24", "open")
	runDetached(t, d, "in", "--network", "sealed", "--", "sleep", "600")
	d.MustTether("network", "connect", "sealed2", "in")
	runDetached(t, d, "peer", "--network", "sealed", "--", "sleep", "600")
	runDetached(t, d, "both", "--network", "sealed", "--", "sleep", "600")
	d.MustTether("network", "connect", "open", "both")
	in, both := procNetNS(t, d, "in"), procNetNS(t, d, "both")
	peerIP := ip(t, d, "peer", "sealed")

	assertNotForwarded := func(name string) {
		t.Helper()
		for _, proto := range []string{"udp", "tcp"} {
			r := query(t, in, proto+"-"+name, mdns.TypeA, proto)
			if r.Rcode != mdns.RcodeServerFailure || len(r.Answer) != 0 {
				t.Errorf("%s over %s from an internal-only sandbox: rcode %s %v, want SERVFAIL", name, proto,
					mdns.RcodeToString[r.Rcode], r.Answer)
			}
			if up.saw(proto + "-" + name) {
				t.Errorf("EXFILTRATED: the upstream received %q (over %s) from a sandbox on internal networks only", proto+"-"+name, proto)
			}
		}
	}
	assertNotForwarded("secret-data.example.com")
	// PTR of an address no sandbox has is an external name too.
	if r := query(t, in, "9.9.9.203.in-addr.arpa", mdns.TypePTR, "udp"); r.Rcode != mdns.RcodeServerFailure || up.saw("9.9.9.203.in-addr.arpa") {
		t.Errorf("external PTR from an internal-only sandbox: rcode %s, upstream saw it: %v", mdns.RcodeToString[r.Rcode], up.saw("9.9.9.203.in-addr.arpa"))
	}
	// Local names still resolve.
	if got := aRecords(query(t, in, "peer", mdns.TypeA, "udp")); len(got) != 1 || got[0] != peerIP {
		t.Errorf("local name from an internal-only sandbox: peer -> %v, want %s", got, peerIP)
	}
	if out := d.MustTether("exec", "in", "--", "getent", "hosts", "peer.sealed"); !strings.HasPrefix(out, peerIP) {
		t.Errorf("getent hosts peer.sealed = %q", out)
	}
	// A sandbox with a way out (internal + a normal network) still forwards.
	if got := aRecords(query(t, both, "allowed.example.com", mdns.TypeA, "udp")); len(got) != 1 || got[0] != "203.0.113.7" || !up.saw("allowed.example.com") {
		t.Errorf("internal + normal network: allowed.example.com -> %v (upstream saw it: %v), want forwarded", got, up.saw("allowed.example.com"))
	}
	// The policy follows connect and disconnect.
	d.MustTether("network", "connect", "open", "in")
	if got := aRecords(query(t, in, "after-connect.example.com", mdns.TypeA, "udp")); len(got) != 1 {
		t.Errorf("after connecting to a normal network: %v, want forwarded", got)
	}
	d.MustTether("network", "disconnect", "open", "in")
	assertNotForwarded("after-disconnect.example.com")
	// And survives a daemon restart (the resolver is rebuilt from records).
	restart(t, d)
	assertNotForwarded("after-restart.example.com")
	if got := aRecords(query(t, in, "peer", mdns.TypeA, "udp")); len(got) != 1 {
		t.Errorf("after restart, peer -> %v", got)
	}
}

// victimResolves asks the victim's resolver for a local name over UDP and
// TCP, n times each, and reports every failure.
func victimResolves(t *testing.T, nsPath, name, want string, n int) {
	t.Helper()
	for i := range n {
		for _, proto := range []string{"udp", "tcp"} {
			r, err := tryQuery(nsPath, name, proto)
			if err != nil {
				t.Errorf("victim query %d over %s during the abuse: %v", i, proto, err)
				return
			}
			if got := aRecords(r); len(got) != 1 || got[0] != want {
				t.Errorf("victim query %d over %s during the abuse: %s -> %v (rcode %s), want %s", i, proto, name, got,
					mdns.RcodeToString[r.Rcode], want)
				return
			}
		}
	}
}

// dialMany opens n TCP connections to 127.0.0.11:53 inside nsPath and
// writes first on each (nothing: idle; a partial message: half-sent). A
// connection the server resets at once (a limit) is counted, not kept.
func dialMany(t *testing.T, nsPath string, n int, first []byte) (conns []net.Conn, reset int) {
	t.Helper()
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	if err := netns.Do(nsPath, func() error {
		for range n {
			c, err := net.DialTimeout("tcp4", "127.0.0.11:53", 2*time.Second)
			if errors.Is(err, syscall.ECONNRESET) {
				reset++
				continue
			}
			if err != nil {
				return err
			}
			conns = append(conns, c)
			if len(first) > 0 {
				_, _ = c.Write(first)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("attacker connection %d: %v", len(conns)+reset, err)
	}
	return conns, reset
}

// closeAll closes conns.
func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// TestSecurityDNSResolverAbuse: one sandbox abuses its 127.0.0.11; another
// sandbox keeps resolving local names (UDP and TCP) during every abuse, the
// daemon holds at most the per-sandbox number of the attacker's
// connections, and a flood of forwarded queries does not take the victim's
// forwarding away. The daemon's descriptors are limited to what it uses plus
// 300, as a host with many sandboxes would be near its limit: an attacker
// holding 500 connections must not run the daemon out of descriptors.
func TestSecurityDNSResolverAbuse(t *testing.T) {
	d, up := secDNSHost(t, testutil.StartNsenter)
	d.MustTether("network", "create", "--subnet", "10.182.0.0/24", "app")
	for _, sb := range []string{"attacker", "victim", "target"} {
		d.MustTether("sandbox", "create", "--name", sb, "--network", "app")
	}
	d.MustTether("exec", "attacker", "--", "true")
	d.MustTether("exec", "victim", "--", "true")
	att, vic := sandbox(t, d, "attacker").NetNS, sandbox(t, d, "victim").NetNS
	target := ip(t, d, "target", "app")
	pid := d.PID()
	base := testutil.OpenFDs(t, pid)
	lim := unix.Rlimit{Cur: uint64(base + 300), Max: uint64(base + 300)}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatalf("limit the daemon's descriptors: %v", err)
	}
	victimResolves(t, vic, "target", target, 3)

	// heldByDaemon is how many more descriptors the daemon has than before
	// the abuse: the attacker's connections it holds.
	heldByDaemon := func() int { return testutil.OpenFDs(t, pid) - base }
	// perSandboxCeiling is generous: the default per-sandbox limit is 32.
	const perSandboxCeiling = 100

	for _, tc := range []struct {
		name  string
		first []byte
	}{
		{"500 idle TCP connections", nil},
		{"500 half-sent TCP queries", []byte{0x00, 0x40, 0x12, 0x34, 0x01}}, // says 64 bytes, sends 3
	} {
		t.Run(tc.name, func(t *testing.T) {
			conns, reset := dialMany(t, att, 500, tc.first)
			time.Sleep(200 * time.Millisecond) // let the daemon accept what it will
			t.Logf("500 connections: %d reset while connecting", reset)
			if n := heldByDaemon(); n > perSandboxCeiling {
				t.Errorf("the daemon holds %d more descriptors with the attacker's 500 connections open, want at most %d (a per-sandbox limit)", n, perSandboxCeiling)
			}
			// The connections are held and nothing else happens: a daemon
			// that spins on a failing accept (miekg/dns#631) uses a whole
			// core here, a sound one next to nothing.
			cpu0, t0 := testutil.ProcCPU(t, pid), time.Now()
			time.Sleep(time.Second)
			cpu, wall := testutil.ProcCPU(t, pid)-cpu0, time.Since(t0)
			t.Logf("daemon CPU while the attacker holds its connections: %v in %v", cpu, wall.Round(time.Millisecond))
			if cpu > wall/2 {
				t.Errorf("the daemon is busy while the attacker merely holds connections: %v of CPU in %v (a loop)", cpu, wall)
			}
			victimResolves(t, vic, "target", target, 10)
			closeAll(conns)
		})
	}

	t.Run("truncated TCP queries then reset", func(t *testing.T) {
		done := make(chan struct{})
		var sent atomic.Int64
		go func() {
			defer close(done)
			_ = netns.Do(att, func() error {
				for i := 0; i < 2000; i++ {
					c, err := net.DialTimeout("tcp4", "127.0.0.11:53", time.Second)
					if err != nil {
						continue
					}
					_, _ = c.Write([]byte{0x00, 0x30, 0xab, 0xcd, 0x01, 0x00, 0x00})
					_ = c.(*net.TCPConn).SetLinger(0) // close sends RST
					c.Close()
					sent.Add(1)
				}
				return nil
			})
		}()
		victimResolves(t, vic, "target", target, 10)
		<-done
		// The aardvark-dns bug left the server in a loop at 100% CPU after
		// such a reset: once the abuse stops the daemon must go idle.
		time.Sleep(500 * time.Millisecond)
		cpu0, t0 := testutil.ProcCPU(t, pid), time.Now()
		time.Sleep(2 * time.Second)
		cpu, wall := testutil.ProcCPU(t, pid)-cpu0, time.Since(t0)
		t.Logf("%d truncated queries reset; daemon CPU while idle afterwards: %v in %v", sent.Load(), cpu, wall.Round(time.Millisecond))
		if cpu > wall/2 {
			t.Errorf("the daemon is busy after the abuse stopped: %v of CPU in %v (a loop)", cpu, wall)
		}
		victimResolves(t, vic, "target", target, 3)
	})

	for _, zone := range []string{"blackhole.test", "slow.test"} {
		t.Run("forward flood to "+zone, func(t *testing.T) {
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var flood atomic.Int64
			var conns []net.Conn
			for g := range 4 {
				var c net.Conn
				if err := netns.Do(att, func() (err error) {
					c, err = net.Dial("udp4", "127.0.0.11:53")
					return err
				}); err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				wg.Go(func() { // drain the answers
					buf := make([]byte, 512)
					for {
						if _, err := c.Read(buf); err != nil {
							return
						}
					}
				})
				wg.Go(func() { // ~1000 queries/s per socket, without waiting
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						m := new(mdns.Msg).SetQuestion(fmt.Sprintf("q%d-%d.%s.", g, i, zone), mdns.TypeA)
						b, _ := m.Pack()
						_, _ = c.Write(b)
						flood.Add(1)
						time.Sleep(time.Millisecond)
					}
				})
			}
			time.Sleep(time.Second) // the flood fills whatever it can
			cpu0 := testutil.ProcCPU(t, pid)
			victimResolves(t, vic, "target", target, 10)
			// The victim's own forwarded queries still get through.
			for i := range 3 {
				name := fmt.Sprintf("victim-%d.%s.example.com", i, strings.Split(zone, ".")[0])
				r, err := tryQuery(vic, name, "udp")
				if err != nil {
					t.Errorf("victim's forwarded %s during the flood: %v", name, err)
					continue
				}
				if got := aRecords(r); len(got) != 1 || got[0] != "203.0.113.7" {
					t.Errorf("victim's forwarded %s during the flood: rcode %s %v, want 203.0.113.7", name, mdns.RcodeToString[r.Rcode], got)
				}
			}
			close(stop)
			closeAll(conns)
			wg.Wait()
			t.Logf("%d flood queries sent, upstream received %d in all so far; daemon CPU during the victim's checks: %v",
				flood.Load(), up.total.Load(), testutil.ProcCPU(t, pid)-cpu0)
		})
		// let in-flight forwards finish before the next abuse
		time.Sleep(2500 * time.Millisecond)
	}
}
