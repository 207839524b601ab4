// Package metricstest reads threepidd's metrics in tests, from the registry
// /metrics serves.
package metricstest

import (
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/threepidd/threepidd/metrics"
)

// Value returns the value of the counter or gauge called name whose labels
// include the (name, value) pairs in labels, or 0 when there is none yet.
func Value(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if hasLabels(m, labels) {
				if c := m.GetCounter(); c != nil {
					return c.GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// hasLabels reports whether m carries every (name, value) pair of labels.
func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
