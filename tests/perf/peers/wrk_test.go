package peers

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wrkConnections is how many connections wrk keeps busy, as issue 16
// measured; wrkThreads is wrk's default.
const (
	wrkConnections = 16
	wrkThreads     = 2
)

// wrkResult is what one wrk run measured.
type wrkResult struct {
	rate     float64       // requests/s
	p50, p99 time.Duration // latencies
	requests int
	cpu      time.Duration // CPU time of the process under test per request (TestProxyBench)
}

// installWrk runs setup.sh beside this file, which installs wrk from
// Debian's packages when it is missing, and returns the binary's path.
func installWrk(ctx context.Context) (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("locate setup.sh: runtime.Caller failed")
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(filepath.Dir(file), "setup.sh"))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("setup.sh: %w\n%s", err, stderr.String())
	}
	for sc := bufio.NewScanner(&stdout); sc.Scan(); {
		if path, ok := strings.CutPrefix(sc.Text(), "WRK="); ok && path != "" {
			return path, nil
		}
	}
	return "", fmt.Errorf("setup.sh printed no WRK=; its output:\n%s", stdout.String())
}

// runWrk loads url with GETs carrying token for d, wrkConnections
// connections at once, and returns what wrk measured. A run with any
// non-2xx answer or socket error (timeouts included) fails.
func runWrk(ctx context.Context, wrk, url, token string, d time.Duration) (wrkResult, error) {
	cmd := exec.CommandContext(ctx, wrk, "-t"+strconv.Itoa(wrkThreads), "-c"+strconv.Itoa(wrkConnections),
		"-d"+strconv.Itoa(int(d.Seconds()))+"s", "--timeout", "10s", "--latency",
		"-H", "Authorization: Bearer "+token, url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	return parseWrk(out)
}

var (
	wrkRate      = regexp.MustCompile(`(?m)^Requests/sec:\s+([\d.]+)$`)
	wrkCount     = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkPercent   = regexp.MustCompile(`(?m)^\s*(50|99)%\s+([\d.]+)(us|ms|s|m)$`)
	wrkBad       = regexp.MustCompile(`(?m)^\s*(Non-2xx or 3xx responses: \d+|Socket errors: .*)$`)
	wrkUnitScale = map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute}
)

// parseWrk reads wrk --latency's report.
func parseWrk(out []byte) (wrkResult, error) {
	if bad := wrkBad.FindSubmatch(out); bad != nil {
		return wrkResult{}, fmt.Errorf("wrk saw errors (%s):\n%s", bad[1], out)
	}
	rate, count := wrkRate.FindSubmatch(out), wrkCount.FindSubmatch(out)
	percents := wrkPercent.FindAllSubmatch(out, -1)
	if rate == nil || count == nil || len(percents) != 2 {
		return wrkResult{}, fmt.Errorf("unexpected wrk report:\n%s", out)
	}
	var r wrkResult
	r.rate, _ = strconv.ParseFloat(string(rate[1]), 64)
	r.requests, _ = strconv.Atoi(string(count[1]))
	for _, p := range percents {
		v, _ := strconv.ParseFloat(string(p[2]), 64)
		d := time.Duration(v * float64(wrkUnitScale[string(p[3])]))
		if string(p[1]) == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	return r, nil
}

// median returns the median of xs (the mean of the middle two for an even
// count).
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s) == 0 {
		return 0
	}
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

func TestParseWrk(t *testing.T) {
	report := `Running 10s test @ http://127.0.0.1:40123/_matrix/client/v3/sync?timeout=0&since=s1
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.73ms    4.09ms  51.36ms   71.50%
    Req/Sec   751.41     88.20     1.00k    69.00%
  Latency Distribution
     50%   10.12ms
     75%   13.03ms
     90%   15.95ms
     99%  864.00us
  14976 requests in 10.01s, 6.63MB read
Requests/sec:   1496.27
Transfer/sec:    678.45KB
`
	got, err := parseWrk([]byte(report))
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{rate: 1496.27, p50: 10120 * time.Microsecond, p99: 864 * time.Microsecond, requests: 14976}
	if got != want {
		t.Errorf("parseWrk = %+v, want %+v", got, want)
	}
	for _, bad := range []string{"  Non-2xx or 3xx responses: 3\n", "  Socket errors: connect 0, read 0, write 0, timeout 2\n"} {
		if _, err := parseWrk([]byte(strings.Replace(report, "Requests/sec:", bad+"Requests/sec:", 1))); err == nil {
			t.Errorf("a report with %q parsed without error", strings.TrimSpace(bad))
		}
	}
	if _, err := parseWrk([]byte("unable to connect to 127.0.0.1:1 Connection refused\n")); err == nil {
		t.Error("a failed run parsed without error")
	}
	if m := median([]float64{3, 1, 2, 10}); m != 2.5 {
		t.Errorf("median = %v, want 2.5", m)
	}
}
