package load

import (
	"strings"
	"testing"
	"time"
)

func TestWriteTable(t *testing.T) {
	ms := time.Millisecond
	rows := []Row{
		{Name: "within", Threepidd: Summary{Count: 10, Rate: 1000.4, P50: 2 * ms, P99: 12 * ms},
			Baseline: Summary{Count: 10, Rate: 1500, P50: 1500 * time.Microsecond, P99: 10 * ms}},
		{Name: "over", Threepidd: Summary{Count: 10, Rate: 10, P50: 150 * ms, P99: 300 * ms, Errors: 2},
			Baseline: Summary{Count: 10, Rate: 100, P50: 10 * ms, P99: 100 * ms}},
		{Name: "threepidd only", Threepidd: Summary{Count: 1, Rate: 1, P50: ms, P99: ms}},
	}
	var b strings.Builder
	if err := WriteTable(&b, rows, 1.3); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"| operation | threepidd req/s | p50 | p99 | errors | baseline req/s | p50 | p99 | errors | p99 ratio |",
		"|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
		"| within | 1000 | 2.00 ms | 12.0 ms | 0 | 1500 | 1.50 ms | 10.0 ms | 0 | 1.20× |",
		"| over | 10 | 150 ms | 300 ms | 2 | 100 | 10.0 ms | 100 ms | 0 | **3.00×** (over 1.3×) |",
		"| threepidd only | 1 | 1.00 ms | 1.00 ms | 0 | – | – | – | – | – |",
	}
	expectTable(t, b.String(), want)
}

func TestWriteScaleTable(t *testing.T) {
	ms := time.Millisecond
	side := func(p99 time.Duration) Summary { return Summary{Count: 10, P99: p99} }
	small := []Row{
		{Name: "flat", Threepidd: side(10 * ms), Baseline: side(4 * ms)},
		{Name: "grows", Threepidd: side(10 * ms), Baseline: side(5 * ms)},
	}
	large := []Row{
		{Name: "flat", Threepidd: side(11 * ms), Baseline: side(4 * ms)},
		{Name: "grows", Threepidd: side(20 * ms), Baseline: side(10 * ms)},
		{Name: "new", Threepidd: side(ms)},
	}
	var b strings.Builder
	if err := WriteScaleTable(&b, small, large, 10, 1000, 1.2); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"| operation | threepidd p99 at 10 | at 1000 | ratio | baseline p99 at 10 | at 1000 | ratio |",
		"|---|--:|--:|--:|--:|--:|--:|",
		"| flat | 10.0 ms | 11.0 ms | 1.10× | 4.00 ms | 4.00 ms | 1.00× |",
		"| grows | 10.0 ms | 20.0 ms | **2.00×** (over 1.2×) | 5.00 ms | 10.0 ms | 2.00× |",
		"| new | – | – | – | – | – | – |",
	}
	expectTable(t, b.String(), want)
}

// expectTable fails t unless table is the lines of want.
func expectTable(t *testing.T, table string, want []string) {
	t.Helper()
	if got := strings.TrimSuffix(table, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("table:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}
