package reconcile

import "github.com/threepidd/threepidd/metrics"

var (
	runs = metrics.Factory.NewCounterVec(metrics.CounterOpts("reconcile_runs_total",
		"Reconcile runs that held the pass, by outcome: finished (the end of the listing), failed (the next "+
			"run continues at the cursor), interrupted (shutdown)."), []string{"outcome"})
	usersSeen = metrics.Factory.NewCounter(metrics.CounterOpts("reconcile_users_seen_total",
		"Homeserver accounts compared by reconcile passes."))
	repairs = metrics.Factory.NewCounterVec(metrics.CounterOpts("reconcile_repairs_total",
		"Changes made by reconcile passes, by kind: imported (only the homeserver had it), mirrored (only "+
			"threepidd had it: written back), deactivated (the homeserver deactivated the account: unbound and removed)."),
		[]string{"kind"})
	conflictsFound = metrics.Factory.NewCounter(metrics.CounterOpts("reconcile_conflicts_total",
		"3PIDs the two sides give to different accounts, found by reconcile passes (each pass counts them again)."))
	lastSuccess = metrics.Factory.NewGauge(metrics.GaugeOpts("reconcile_last_success_timestamp_seconds",
		"When this instance last finished a reconcile pass (Unix time)."))
	runningPasses = metrics.Factory.NewGauge(metrics.GaugeOpts("reconcile_running",
		"1 while this instance runs a reconcile pass."))
	readThroughs = metrics.Factory.NewCounterVec(metrics.CounterOpts("readthrough_users_total",
		"Users seen for the first time by an authenticated request, by outcome: imported (3PIDs imported "+
			"from the homeserver), nothing (none to import), seen (imported before, by another instance, an import or a pass), unknown (not an active homeserver account), "+
			"deferred (mirror work queued: tried again later), error (tried again later)."), []string{"outcome"})
)

func init() {
	// Every series exists from the start, at zero, for dashboards and rate().
	for _, outcome := range []string{"finished", "failed", "interrupted"} {
		runs.WithLabelValues(outcome)
	}
	for _, kind := range []string{"imported", "mirrored", "deactivated"} {
		repairs.WithLabelValues(kind)
	}
	for _, outcome := range []string{"imported", "nothing", "seen", "unknown", "deferred", "error"} {
		readThroughs.WithLabelValues(outcome)
	}
}
