package proxy

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/threepidd/threepidd/metrics"
)

var (
	spliceBytes = metrics.Factory.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metrics.Namespace, Name: "sync_splice_body_bytes",
		Help:    "Size of the upstream sync bodies the section and token were spliced into.",
		Buckets: prometheus.ExponentialBuckets(1<<10, 4, 10), // 1 KiB … 256 MiB
	}, []string{"endpoint"})
	upstreamDuration = metrics.Factory.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metrics.Namespace, Name: "sync_upstream_duration_seconds",
		Help:    "Time until the homeserver answered (headers) a forwarded sync request, long-polls included.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"endpoint"})
	sectionsDeferred = metrics.Factory.NewCounterVec(metrics.CounterOpts("sync_sections_deferred_total",
		"Sync answers streamed without their pending section, which comes with the next sync, because the body did not fit in the splice budget."),
		[]string{"endpoint"})
	budgetUsed = metrics.Factory.NewGauge(metrics.GaugeOpts("sync_splice_budget_used_bytes",
		"Bytes of upstream sync bodies held for splicing (sync.splice_budget_bytes bounds them)."))
)

// upstreamSeconds and splicedBytes are the series of upstreamDuration and
// spliceBytes by endpoint, looked up once: a lookup by label values costs a
// hash and a lock on every request.
var upstreamSeconds, splicedBytes = map[string]prometheus.Observer{}, map[string]prometheus.Observer{}

func init() {
	// Every series exists from the start, at zero, for dashboards and rate().
	for _, endpoint := range []string{syncFlavour.endpoint, slidingFlavour.endpoint} {
		sectionsDeferred.WithLabelValues(endpoint)
		splicedBytes[endpoint] = spliceBytes.WithLabelValues(endpoint)
		upstreamSeconds[endpoint] = upstreamDuration.WithLabelValues(endpoint)
	}
	upstreamSeconds[passthrough] = upstreamDuration.WithLabelValues(passthrough)
}
