package doctor

// DNS upstreams: the servers the embedded resolver forwards outside names
// to (daemon option dns, else the host's resolv.conf).

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tether-net/tether/internal/doctor/report"
)

// checkDNS probes every upstream at once. All silent: error (sandboxes
// resolve no outside name); some: warning (each query that tries a silent
// one first waits for its timeout).
func (r *run) checkDNS(ctx context.Context) string {
	ups := r.st.Upstreams
	if len(ups) == 0 {
		r.add(report.Finding{Check: CheckDNS, Severity: report.Warning, Subject: "upstreams",
			What: "the resolver has no upstream server (no dns option, and no usable nameserver in /etc/resolv.conf)",
			Why:  "sandboxes resolve each other's names but no outside name",
			Fix:  "set \"dns\": [\"ADDRESS\"] in daemon.json (or --dns) and restart the daemon, or add a nameserver that is not a loopback address to /etc/resolv.conf"})
		return ""
	}
	if r.d.P == nil {
		return "no DNS prober"
	}
	errs := r.probeAll(ctx, ups)
	var bad []string
	for i, err := range errs {
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s (%v)", ups[i], err))
		}
	}
	if len(bad) == 0 {
		return ""
	}
	f := report.Finding{Check: CheckDNS, Severity: report.Warning, Subject: "upstreams",
		What: "DNS upstreams do not answer: " + strings.Join(bad, ", "),
		Why:  "queries that try them first wait for their timeout before another server answers",
		Fix:  "check the server and the route to it from this host (dig @SERVER . NS), or set \"dns\" in daemon.json to servers that answer and restart the daemon"}
	if len(bad) == len(ups) {
		f.Severity = report.Error
		f.Why = "no upstream answers: sandboxes resolve each other's names but no outside name"
	}
	r.add(f)
	return ""
}

func (r *run) probeAll(ctx context.Context, ups []netip.AddrPort) []error {
	timeout := r.d.ProbeTimeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	errs := make([]error, len(ups))
	var wg sync.WaitGroup
	for i, up := range ups {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			errs[i] = r.d.P.Probe(pctx, up)
		})
	}
	wg.Wait()
	return errs
}

// UDPProber asks a server for the root's NS records over UDP: any answer
// with the query's ID (whatever its response code) counts.
type UDPProber struct{}

// Probe implements Prober.
func (UDPProber) Probe(ctx context.Context, server netip.AddrPort) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", server.String())
	if err != nil {
		return fmt.Errorf("dial %s: %w", server, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	id := uint16(rand.Uint32())
	if _, err := c.Write(rootQuery(id)); err != nil {
		return fmt.Errorf("send to %s: %w", server, err)
	}
	buf := make([]byte, 1500)
	for {
		n, err := c.Read(buf)
		if err != nil {
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				return errors.New("no answer")
			case errors.Is(err, syscall.ECONNREFUSED):
				return errors.New("refused: nothing listens on the port")
			}
			return fmt.Errorf("read from %s: %w", server, err)
		}
		if n >= 12 && binary.BigEndian.Uint16(buf) == id && buf[2]&0x80 != 0 {
			return nil
		}
	}
}

// rootQuery is a DNS query for ". IN NS" with recursion desired.
func rootQuery(id uint16) []byte {
	q := make([]byte, 12, 17)
	binary.BigEndian.PutUint16(q[0:], id)
	q[2] = 0x01                          // RD
	binary.BigEndian.PutUint16(q[4:], 1) // QDCOUNT
	return append(q, 0, 0, 2, 0, 1)      // root name, type NS, class IN
}
