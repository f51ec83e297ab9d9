package dns

// Metrics of the resolver (tether_dns_query_duration_seconds by outcome,
// tether_dns_forwards_in_flight). A query costs one histogram observation
// and, on the library path, two clock readings; the local answers of the
// wire path share the clock readings of their recvmmsg batch. With metrics
// off (metrics.On) nothing is read or counted.

import (
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-net/tether/internal/metrics"
)

// Outcomes of a query.
const (
	outcomeLocal     = "local"     // answered from the table (NOERROR, NODATA included)
	outcomeForwarded = "forwarded" // answered by an upstream (NOERROR)
	outcomeNXDomain  = "nxdomain"  // no such name (an upstream's NXDOMAIN)
	outcomeRefused   = "refused"   // refused: a limit reached, a source not allowed, or an upstream's REFUSED
	outcomeError     = "error"     // SERVFAIL (no upstream answered, forwarding not allowed), FORMERR, NOTIMP
)

// observers, resolved once: a label lookup per query costs more than the
// observation.
var (
	obsLocal     = metrics.DNSSeconds.WithLabelValues(outcomeLocal)
	obsForwarded = metrics.DNSSeconds.WithLabelValues(outcomeForwarded)
	obsNXDomain  = metrics.DNSSeconds.WithLabelValues(outcomeNXDomain)
	obsRefused   = metrics.DNSSeconds.WithLabelValues(outcomeRefused)
	obsError     = metrics.DNSSeconds.WithLabelValues(outcomeError)
)

// queryStart is the clock reading a query's latency is measured from; zero
// with metrics off.
func queryStart() time.Time {
	if !metrics.On() {
		return time.Time{}
	}
	return time.Now()
}

// observeQuery counts the answer resp to a query read at t0, forwarded
// upstream or not.
func observeQuery(t0 time.Time, resp *mdns.Msg, forwarded bool) {
	if t0.IsZero() || resp == nil {
		return
	}
	outcomeOf(resp.Rcode, forwarded).Observe(time.Since(t0).Seconds())
}

// observeLocal counts n local answers of the wire path, read at t0 (called
// before they are sent, as observeQuery is).
func observeLocal(t0 time.Time, n int) {
	if t0.IsZero() || n == 0 {
		return
	}
	d := time.Since(t0).Seconds()
	for range n {
		obsLocal.Observe(d)
	}
}

func outcomeOf(rcode int, forwarded bool) prometheus.Observer {
	switch {
	case rcode == mdns.RcodeSuccess && forwarded:
		return obsForwarded
	case rcode == mdns.RcodeSuccess:
		return obsLocal
	case rcode == mdns.RcodeNameError:
		return obsNXDomain
	case rcode == mdns.RcodeRefused:
		return obsRefused
	}
	return obsError
}

// ForwardsInFlight is the number of queries forwarded upstream and not
// answered yet, across all sandboxes.
func (r *Resolver) ForwardsInFlight() int { return len(r.inFlight) }
