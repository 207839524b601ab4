// Package scale runs `threepidd import` and `threepidd reconcile`, as
// processes, over a homeserver of a million users (the fake Synapse serving a
// computed population: user i holds 1 to 3 e-mail addresses, one account in
// a thousand also holds its neighbour's first address in another spelling),
// on each storage backend, and reports each command's rate and peak resident
// memory (VmHWM) at each size, so that flat memory shows as the same peak at
// 100,000 and 1,000,000 users. The import is killed after its first page and
// run again, which must continue at its cursor.
//
// It is opt-in (a run takes tens of minutes):
//
//	THREEPIDD_TEST_SCALE=1 THREEPIDD_TEST_POSTGRES=... \
//	    go test ./tests/perf/scale -run TestScale -v -timeout 120m
//
// THREEPIDD_TEST_SCALE_SIZES sets the user counts (default 100000,1000000).
package scale

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/support"
)

const (
	// scaleEnv turns TestScale on.
	scaleEnv = "THREEPIDD_TEST_SCALE"
	// conflictEvery puts a conflict in every that many accounts.
	conflictEvery = 1000
	// adminToken is the fake Synapse's admin token.
	adminToken = "scale-admin"
	// rssEvery is how often a command's peak RSS is read while it runs.
	rssEvery = 100 * time.Millisecond
	// commandTimeout bounds one command.
	commandTimeout = 60 * time.Minute
)

// TestMain removes the threepidd binary the test builds.
func TestMain(m *testing.M) { os.Exit(support.RunTests(m)) }

// TestScale imports and reconciles each size on each backend and prints a
// Markdown table of rates and peak RSS.
func TestScale(t *testing.T) {
	if os.Getenv(scaleEnv) != "1" {
		t.Skipf("set %s=1 to run the scale test (see the package comment)", scaleEnv)
	}
	sizes := []int{100_000, 1_000_000}
	if v := os.Getenv("THREEPIDD_TEST_SCALE_SIZES"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				t.Fatalf("THREEPIDD_TEST_SCALE_SIZES=%q: want positive integers, comma-separated", v)
			}
			sizes = append(sizes, n)
		}
	}
	support.ThreepiddBinary(t)
	var rows []string
	for _, name := range backendNames(t) {
		for _, users := range sizes {
			t.Run(fmt.Sprintf("%s/%d", name, users), func(t *testing.T) {
				before := support.LoadAverage()
				row := runScale(t, storagetest.Fresh(t, name), users)
				rows = append(rows, fmt.Sprintf("| %s | %d | %s | %s → %s |", name, users, row, before, support.LoadAverage()))
			})
		}
	}
	fmt.Printf("\n| backend | users | import: time | accounts/s | peak RSS | reconcile: time | accounts/s | peak RSS | load average before → after |\n")
	fmt.Printf("|---|--:|--:|--:|--:|--:|--:|--:|---|\n%s\n\n", strings.Join(rows, "\n"))
}

// backendNames names the available backends.
func backendNames(t *testing.T) []string {
	var names []string
	for _, b := range storagetest.Backends(t) {
		names = append(names, b.Name)
	}
	return names
}

// run is one finished command: its output, time and peak RSS.
type run struct {
	out     string
	elapsed time.Duration
	peakRSS int64
}

var (
	firstPageRE = regexp.MustCompile(`import: \d+/\d+ accounts read`)
	countRE     = func(label string) *regexp.Regexp { return regexp.MustCompile(label + `:\s+(\d+)`) }
)

// runScale imports (killed after a page, then resumed) and reconciles users
// accounts on b, checks the reports, and returns the table cells.
func runScale(t *testing.T, b storagetest.Backend, users int) string {
	hs := fakes.NewHomeserver(t, "hs.test")
	hs.SetAdminToken(adminToken)
	p := fakes.Population{Users: users, ConflictEvery: conflictEvery}
	hs.SetPopulation(p)
	dir := t.TempDir()
	config := filepath.Join(dir, "threepidd.yaml")
	y := fmt.Sprintf("server_name: hs.test\ndatabase: {driver: %s, dsn: %q}\nhomeserver: {url: %q, kind: synapse, admin_token: %s}\n",
		b.Driver, b.DSN, hs.URL(), adminToken)
	if err := os.WriteFile(config, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}

	// Interrupted after its first page...
	first := start(t, filepath.Join(dir, "import-killed.log"), "import", "-config", config)
	if _, err := first.WaitLine(firstPageRE, time.Minute); err != nil {
		first.Kill()
		t.Fatalf("the import read no page: %v\n%s", err, first.LogTail(20))
	}
	first.Kill()
	// ...then run again: it continues.
	imp := finish(t, filepath.Join(dir, "import.log"), "import", "-config", config)
	conflicts := (users + 1) / conflictEvery
	threepids := 0
	for i := range users {
		threepids += p.ThreepidCount(i)
	}
	for label, want := range map[string]int{"accounts read": users, "conflicts": conflicts, "not imported": 0} {
		checkCount(t, "import", imp.out, label, want)
	}
	// Each conflicting address is held by two accounts and imported for none.
	imported, present := count(t, imp.out, "imported"), count(t, imp.out, "already present")
	if imported+present != threepids-conflicts {
		t.Errorf("import: %d imported + %d present, want %d (every address but the %d in conflict)", imported, present, threepids-conflicts, conflicts)
	}
	if !strings.Contains(imp.out, "import: continuing the import") {
		t.Errorf("the second import did not continue the first:\n%s", tail(imp.out))
	}

	rec := finish(t, filepath.Join(dir, "reconcile.log"), "reconcile", "-config", config)
	checkCount(t, "reconcile", rec.out, "accounts compared", users)
	if !strings.Contains(rec.out, "pass:                  finished") {
		t.Errorf("reconcile did not finish:\n%s", tail(rec.out))
	}
	t.Logf("import:\n%s\nreconcile:\n%s", tail(imp.out), tail(rec.out))
	return fmt.Sprintf("%s | %.0f | %s | %s | %.0f | %s", imp.elapsed.Round(time.Second), float64(users)/imp.elapsed.Seconds(), mib(imp.peakRSS),
		rec.elapsed.Round(time.Second), float64(users)/rec.elapsed.Seconds(), mib(rec.peakRSS))
}

// start runs threepidd with args, its output in out.
func start(t *testing.T, out string, args ...string) *support.Process {
	t.Helper()
	proc, err := support.StartProcess("threepidd "+args[0], support.ThreepiddCommand(context.Background(), t, args...), out)
	if err != nil {
		t.Fatal(err)
	}
	return proc
}

// finish runs threepidd with args to its end (within commandTimeout),
// reading its peak RSS as it goes, and fails t unless it exits with 0.
func finish(t *testing.T, out string, args ...string) run {
	t.Helper()
	began := time.Now()
	proc := start(t, out, args...)
	var peak int64
	exited := make(chan error, 1)
	go func() { exited <- proc.ExitErr() }()
	tick := time.NewTicker(rssEvery)
	defer tick.Stop()
	deadline := time.After(commandTimeout)
	for {
		select {
		case err := <-exited:
			data, rerr := os.ReadFile(out)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if err != nil {
				t.Fatalf("threepidd %s: %v\n%s", args[0], err, tail(string(data)))
			}
			return run{out: string(data), elapsed: time.Since(began), peakRSS: peak}
		case <-tick.C:
			if rss, err := proc.PeakRSS(); err == nil { // an error: it has just exited
				peak = max(peak, rss)
			}
		case <-deadline:
			proc.Kill()
			t.Fatalf("threepidd %s did not finish within %v", args[0], commandTimeout)
		}
	}
}

// count reads the number after label in a report.
func count(t *testing.T, out, label string) int {
	t.Helper()
	m := countRE(label).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q in the report:\n%s", label, tail(out))
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// checkCount checks the number after label in a report.
func checkCount(t *testing.T, command, out, label string, want int) {
	t.Helper()
	if got := count(t, out, label); got != want {
		t.Errorf("%s: %s %d, want %d", command, label, got, want)
	}
}

// tail is the last lines of out.
func tail(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// mib renders bytes in MiB.
func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
