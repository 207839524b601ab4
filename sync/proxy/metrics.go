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
)
