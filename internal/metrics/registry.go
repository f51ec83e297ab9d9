package metrics

import (
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// registry holds the process's metrics: every vector of this package, the
// Go runtime's and the process's (CPU, memory, file descriptors), and what
// Register adds.
var registry = newRegistry()

func newRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(all()...)
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Register adds c to the process's registry (a Store's collector). A
// collector registered already is not an error.
func Register(c prometheus.Collector) error {
	err := registry.Register(c)
	if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
		return nil
	}
	return err
}

// Gatherer returns what a scrape reads: the process's registry plus the
// collectors given (an engine's, which describes one engine's state and so
// is not process-wide).
func Gatherer(extra ...prometheus.Collector) (prometheus.Gatherer, error) {
	if len(extra) == 0 {
		return registry, nil
	}
	r := prometheus.NewRegistry()
	for _, c := range extra {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return prometheus.Gatherers{registry, r}, nil
}

// Handler serves the exposition of g (text format, or what the scraper
// negotiates), as GET /metrics answers it.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
