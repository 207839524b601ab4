package load

import (
	"errors"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 0.99, 0},
		{"one value", ms(7), 0.5, 7 * time.Millisecond},
		{"median of four is the second", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"median of five is the third", ms(1, 2, 3, 4, 5), 0.5, 3 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 0.99, 99 * time.Millisecond},
		{"p99 of ten is the largest", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
		{"p100 is the largest", ms(1, 2, 3), 1, 3 * time.Millisecond},
		{"a tiny p is the smallest", ms(1, 2, 3), 0.0001, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestStatsSummarize(t *testing.T) {
	var s Stats
	for _, d := range []time.Duration{4, 1, 3, 2} {
		s.Latencies = append(s.Latencies, d*time.Millisecond)
	}
	s.fail(errors.New("first"))
	s.fail(errors.New("second"))
	var other Stats
	other.fail(errors.New("third"))
	other.Latencies = []time.Duration{5 * time.Millisecond}
	s.merge(other)

	got := s.Summarize(2 * time.Second)
	want := Summary{Count: 5, Errors: 3, Rate: 2.5, P50: 3 * time.Millisecond, P99: 5 * time.Millisecond, FirstError: "first"}
	if got != want {
		t.Errorf("Summarize = %+v, want %+v", got, want)
	}
	if empty := (&Stats{}).Summarize(0); empty != (Summary{}) {
		t.Errorf("empty Summarize = %+v, want zero", empty)
	}
}
