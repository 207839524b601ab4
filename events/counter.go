package events

import (
	"context"

	"github.com/threepidd/threepidd/metrics"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage"
)

var changes = metrics.Factory.NewCounterVec(metrics.CounterOpts("threepid_changes_total",
	"3PID changes applied (committed), by callback (user_threepid, identity_server_binding) and op."),
	[]string{"callback", "op"})

func init() {
	// Every series exists from the start, at zero, for dashboards and rate().
	for _, op := range []policy.Op{policy.OpAdd, policy.OpRemove} {
		changes.WithLabelValues(policy.CallbackUserThreepid, string(op))
	}
	for _, op := range []policy.Op{policy.OpBind, policy.OpUnbind, policy.OpLost} {
		changes.WithLabelValues(policy.CallbackIdentityServerBinding, string(op))
	}
}

// Counter is the sink that counts each change in
// threepidd_threepid_changes_total once its transaction has committed: a
// change rolled back is never counted.
type Counter struct{}

// Applied implements Sink.
func (Counter) Applied(_ context.Context, q storage.Querier, c policy.Change) error {
	q.AfterCommit(func() { changes.WithLabelValues(c.Callback, string(c.Op)).Inc() })
	return nil
}
