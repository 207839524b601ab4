// Package metrics holds threepidd's Prometheus registry. Each package declares
// its own metrics with [Factory]; /metrics serves [Registry].
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry is the registry every threepidd metric is registered on.
var Registry = prometheus.NewRegistry()

// Factory creates metrics registered on Registry.
var Factory = promauto.With(Registry)

func init() {
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// Handler serves Registry in the Prometheus text format.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{Registry: Registry})
}

// Namespace prefixes every metric name.
const Namespace = "threepidd"
