package load

import (
	"math"
	"slices"
	"time"
)

// Stats accumulates the outcome of one step of an operation against one
// target, over one or more rounds.
type Stats struct {
	// Latencies are those of the successful requests.
	Latencies []time.Duration
	// Errors counts failed requests: transport errors and unexpected answers.
	Errors int
	// FirstError describes the first failure ("" if none).
	FirstError string
}

// fail records a failed request.
func (s *Stats) fail(err error) {
	if s.Errors == 0 {
		s.FirstError = err.Error()
	}
	s.Errors++
}

// merge adds o's requests to s.
func (s *Stats) merge(o Stats) {
	s.Latencies = append(s.Latencies, o.Latencies...)
	if s.Errors == 0 {
		s.FirstError = o.FirstError
	}
	s.Errors += o.Errors
}

// Summary is what the report shows of a Stats.
type Summary struct {
	// Count is the number of successful requests.
	Count int
	// Errors is the number of failed ones.
	Errors int
	// Rate is successful requests per second of measured time.
	Rate float64
	// P50 and P99 are latency percentiles (nearest rank) of the successful requests.
	P50, P99 time.Duration
	// FirstError describes the first failure ("" if none).
	FirstError string
}

// Summarize computes the summary of s over elapsed measured time. It sorts
// s.Latencies in place.
func (s *Stats) Summarize(elapsed time.Duration) Summary {
	slices.Sort(s.Latencies)
	sum := Summary{
		Count:      len(s.Latencies),
		Errors:     s.Errors,
		P50:        Percentile(s.Latencies, 0.50),
		P99:        Percentile(s.Latencies, 0.99),
		FirstError: s.FirstError,
	}
	if elapsed > 0 {
		sum.Rate = float64(sum.Count) / elapsed.Seconds()
	}
	return sum
}

// Percentile returns the nearest-rank p-quantile (0 < p ≤ 1) of sorted: the
// smallest value that at least a fraction p of the values do not exceed. It
// returns 0 for an empty slice.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}
