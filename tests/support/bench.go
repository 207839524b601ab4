package support

import (
	"slices"
	"testing"
	"time"
)

// ReportPercentiles reports the p50 and p99 of lat in milliseconds, as the
// benchmark metrics <name>-p50-ms and <name>-p99-ms. It sorts lat.
func ReportPercentiles(b *testing.B, name string, lat []time.Duration) {
	slices.Sort(lat)
	at := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(at(0.50), name+"-p50-ms")
	b.ReportMetric(at(0.99), name+"-p99-ms")
}
