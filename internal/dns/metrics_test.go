package dns

import (
	"net/netip"
	"testing"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tether-net/tether/internal/metrics"
)

func TestOutcomeOf(t *testing.T) {
	for _, tc := range []struct {
		rcode     int
		forwarded bool
		want      prometheus.Observer
	}{
		{mdns.RcodeSuccess, false, obsLocal},
		{mdns.RcodeSuccess, true, obsForwarded},
		{mdns.RcodeNameError, true, obsNXDomain},
		{mdns.RcodeRefused, false, obsRefused},
		{mdns.RcodeRefused, true, obsRefused},
		{mdns.RcodeServerFailure, false, obsError},
		{mdns.RcodeServerFailure, true, obsError},
		{mdns.RcodeFormatError, false, obsError},
	} {
		if got := outcomeOf(tc.rcode, tc.forwarded); got != tc.want {
			t.Errorf("rcode %s forwarded %v: wrong outcome", mdns.RcodeToString[tc.rcode], tc.forwarded)
		}
	}
}

func queries(t *testing.T, o prometheus.Observer) uint64 {
	t.Helper()
	var m dto.Metric
	if err := o.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// TestQueriesCountedByOutcome sends one query of each outcome over UDP
// and TCP through the event loop and an upstream in the test process.
func TestQueriesCountedByOutcome(t *testing.T) {
	up, _ := startServer(t, mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		m := new(mdns.Msg).SetReply(req)
		switch req.Question[0].Name {
		case "nx.example.":
			m.Rcode = mdns.RcodeNameError
		case "broken.example.":
			m.Rcode = mdns.RcodeServerFailure
		default:
			m.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: req.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 5},
				A: netip.MustParseAddr("192.0.2.7").AsSlice()}}
		}
		_ = w.WriteMsg(m)
	}))
	udp, tcp := resolverFor(t, idWeb, Config{Upstreams: []netip.AddrPort{netip.MustParseAddrPort(up)}})
	for _, proto := range []struct{ net, addr string }{{"udp", udp}, {"tcp", tcp}} {
		for _, tc := range []struct {
			name string
			obs  prometheus.Observer
		}{
			{"db", obsLocal}, // local, from the wire path over UDP
			{"up.example", obsForwarded},
			{"nx.example", obsNXDomain},
			{"broken.example", obsError},
		} {
			before := queries(t, tc.obs)
			query(t, proto.net, proto.addr, tc.name, mdns.TypeA)
			if got := queries(t, tc.obs) - before; got != 1 {
				t.Errorf("%s %s: %d queries counted under its outcome, want 1", proto.net, tc.name, got)
			}
		}
	}
	metrics.SetOn(false)
	defer metrics.SetOn(true)
	before := queries(t, obsLocal)
	query(t, "udp", udp, "db", mdns.TypeA)
	if got := queries(t, obsLocal) - before; got != 0 {
		t.Errorf("metrics off: %d queries counted", got)
	}
}

// BenchmarkObserveQuery is what metrics add to one answer of the library
// path (a clock reading at the start, one at the end, one observation);
// "off" is the same with metrics turned off.
func BenchmarkObserveQuery(b *testing.B) {
	resp := new(mdns.Msg)
	for _, on := range []bool{true, false} {
		b.Run(map[bool]string{true: "on", false: "off"}[on], func(b *testing.B) {
			metrics.SetOn(on)
			defer metrics.SetOn(true)
			for b.Loop() {
				observeQuery(queryStart(), resp, false)
			}
		})
	}
}
