package sync

import "github.com/threepidd/threepidd/metrics"

var (
	waiting = metrics.Factory.NewGauge(metrics.GaugeOpts("sync_waiting_long_polls",
		"Long-polls (proxy and library) currently waiting for a 3PID notification."))
	wakeups = metrics.Factory.NewCounter(metrics.CounterOpts("sync_wakeups_total",
		"Long-polls woken by a 3PID notification."))
)
