package load

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Row is one line of the report: one step (or whole iterations) of an
// operation, on threepidd and on the baseline.
type Row struct {
	Name                string
	Threepidd, Baseline Summary
}

// Ratio is threepidd's p99 over the baseline's; 0 when either side has no
// successful request.
func (r Row) Ratio() float64 {
	if r.Threepidd.Count == 0 || r.Baseline.Count == 0 || r.Baseline.P99 <= 0 {
		return 0
	}
	return float64(r.Threepidd.P99) / float64(r.Baseline.P99)
}

// WriteTable writes rows as a Markdown table; the last column compares the
// p99 ratio with target ("ok" or "over").
func WriteTable(w io.Writer, rows []Row, target float64) error {
	var b strings.Builder
	b.WriteString("| operation | threepidd req/s | p50 | p99 | errors | baseline req/s | p50 | p99 | errors | p99 ratio |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rows {
		ratio := "–"
		switch x := r.Ratio(); {
		case x == 0:
		case x <= target:
			ratio = fmt.Sprintf("%.2f×", x)
		default:
			ratio = fmt.Sprintf("**%.2f×** (over %.1f×)", x, target)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.Name, summaryCells(r.Threepidd), summaryCells(r.Baseline), ratio)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// summaryCells renders rate, p50, p99 and errors of one side ("–" when the
// side has no such step).
func summaryCells(s Summary) string {
	if s.Count == 0 && s.Errors == 0 {
		return "– | – | – | –"
	}
	return fmt.Sprintf("%.0f | %s | %s | %d", s.Rate, FormatLatency(s.P50), FormatLatency(s.P99), s.Errors)
}

// FormatLatency renders d in milliseconds with three significant digits
// (two decimals below 10 ms).
func FormatLatency(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 10:
		return fmt.Sprintf("%.2f ms", ms)
	case ms < 100:
		return fmt.Sprintf("%.1f ms", ms)
	default:
		return fmt.Sprintf("%.0f ms", ms)
	}
}

// WriteScaleTable writes, as a Markdown table, how each row's p99 grew from
// the run at small users to the run at large users (rows matched by name):
// threepidd's and the baseline's p99 at each size and their ratios, the last
// compared with target ("ok" or "over").
func WriteScaleTable(w io.Writer, small, large []Row, smallUsers, largeUsers int, target float64) error {
	var b strings.Builder
	fmt.Fprintf(&b, "| operation | threepidd p99 at %d | at %d | ratio | baseline p99 at %d | at %d | ratio |\n",
		smallUsers, largeUsers, smallUsers, largeUsers)
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|\n")
	for _, l := range large {
		var s Row
		for _, x := range small {
			if x.Name == l.Name {
				s = x
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", l.Name, growth(s.Threepidd, l.Threepidd, target), growth(s.Baseline, l.Baseline, 0))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// growth renders the p99 of one side at both sizes and their ratio, marked
// when over target (0: not compared).
func growth(small, large Summary, target float64) string {
	if small.Count == 0 || large.Count == 0 || small.P99 <= 0 {
		return "– | – | –"
	}
	x := float64(large.P99) / float64(small.P99)
	ratio := fmt.Sprintf("%.2f×", x)
	if target > 0 && x > target {
		ratio = fmt.Sprintf("**%.2f×** (over %.1f×)", x, target)
	}
	return fmt.Sprintf("%s | %s | %s", FormatLatency(small.P99), FormatLatency(large.P99), ratio)
}
