package attach

// Helpers shared by the rows of every system (Tether, the floor, the CNI
// reference plugins in bench/cni): driving a row of attaches in a row or
// from several clients at once, and the smoke tests' correctness checks
// (traffic between sandboxes, a published port reached from an outside
// namespace, nothing left in the rules). Every check stays inside the
// namespaces the run created: sockets are opened inside a sandbox namespace
// or the outside namespace, and only their addresses are dialled.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vnetns "github.com/vishvananda/netns"

	"github.com/tether-net/tether/internal/testutil"
)

// BasePort is the first published host port: with Options.Publish, sandbox
// i publishes host port BasePort+i to its port 80/tcp.
const BasePort = 20000

// Parallel calls fn(i) for every i in [0, n), in order of i, from clients
// goroutines at once (one, on the caller's goroutine, when clients ≤ 1), and
// returns what each call reported as its duration and the wall time from the
// first call's start to the last one's end. After a failure no further call
// starts; the errors of those that ran are joined.
func Parallel(n, clients int, fn func(i int) (time.Duration, error)) ([]time.Duration, time.Duration, error) {
	took := make([]time.Duration, n)
	start := time.Now()
	if clients <= 1 {
		for i := range n {
			d, err := fn(i)
			took[i] = d
			if err != nil {
				return took, time.Since(start), err
			}
		}
		return took, time.Since(start), nil
	}
	var next atomic.Int64
	var failed atomic.Bool
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				d, err := fn(i)
				took[i] = d
				if err != nil {
					failed.Store(true)
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return took, time.Since(start), errors.Join(errs...)
}

// InNSPath runs fn on a fresh locked thread inside the network namespace
// bound at path (a namespace file).
func InNSPath(path string, fn func() error) error {
	h, err := vnetns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open namespace %q: %w", path, err)
	}
	defer h.Close()
	return InNS(h, fn)
}

// Ping sends one ICMP echo from inside the namespace file nsPath to addr and
// waits up to 2 s for the answer. Equivalent to
// `nsenter --net=NSPATH ping -c1 -W2 ADDR`.
func Ping(nsPath string, addr netip.Addr) error {
	out, err := runCmd("nsenter", "--net="+nsPath, "--", "ping", "-n", "-c1", "-W2", addr.String())
	if err != nil {
		return fmt.Errorf("ping %s from %s: %w\n%s", addr, nsPath, err, out)
	}
	return nil
}

// Serve listens on port (TCP, all addresses) inside the namespace file nsPath
// and answers every connection with answer, then closes it. The listening
// socket is opened inside the namespace and served from the test process,
// so no process is left behind. The returned function stops it.
func Serve(nsPath string, port int, answer string) (stop func(), err error) {
	var ln net.Listener
	err = InNSPath(nsPath, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on :%d in %s: %w", port, nsPath, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, answer)
			c.Close()
		}
	}()
	return func() { ln.Close(); <-done }, nil
}

// Fetch connects from inside the named namespace ns (ip netns add) to addr
// and returns what the server sent before closing.
func Fetch(ns, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := testutil.DialInNS(ctx, ns, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("connect to %s from %s: %w", addr, ns, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return string(b), fmt.Errorf("read from %s (from %s): %w", addr, ns, err)
	}
	return string(b), nil
}

// CheckPublished serves the sandbox's name on port 80 inside its namespace
// and fetches it from the outside namespace through the host's uplink
// address and the published host port: the answer proves the DNAT path.
func CheckPublished(outsideNS, sandboxNS, name string, hostPort int) error {
	stop, err := Serve(sandboxNS, 80, name)
	if err != nil {
		return err
	}
	defer stop()
	addr := net.JoinHostPort(testutil.UplinkAddr, fmt.Sprint(hostPort))
	got, err := Fetch(outsideNS, addr)
	if err != nil {
		return fmt.Errorf("published port of %s: %w", name, err)
	}
	if got != name {
		return fmt.Errorf("published port of %s: %s answered %q, want %q", name, addr, got, name)
	}
	return nil
}

// RulesMentioning returns the lines of the nftables ruleset of the named
// namespace that name one of addrs (as a whole address, so 10.0.0.2 does not
// match 10.0.0.20).
func RulesMentioning(ns string, addrs []netip.Addr) ([]string, error) {
	out, err := testutil.InNS(ns, "nft", "list", "ruleset")
	if err != nil {
		return nil, fmt.Errorf("nft list ruleset in %s: %w\n%s", ns, err, out)
	}
	var hits []string
	for _, a := range addrs {
		re := regexp.MustCompile(`(^|[^0-9.])` + regexp.QuoteMeta(a.String()) + `($|[^0-9])`)
		for _, l := range strings.Split(out, "\n") {
			if re.MatchString(l) {
				hits = append(hits, l)
			}
		}
	}
	return hits, nil
}
