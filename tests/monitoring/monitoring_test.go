// Package monitoring checks what deploy/ ships for operators against a
// running threepidd: every metric the Grafana dashboard
// (deploy/grafana/threepidd.json) and the Prometheus alerting rules
// (deploy/prometheus/threepidd-rules.yml) name is one the threepidd binary
// exports, the dashboard is well formed, and the rules pass promtool's check
// and their unit tests, one at least for each alert. The package holds only
// tests.
package monitoring

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
)

const (
	dashboardFile = "../../deploy/grafana/threepidd.json"
	rulesFile     = "../../deploy/prometheus/threepidd-rules.yml"
	rulesTestFile = "../../deploy/prometheus/threepidd-rules.test.yml"
)

// TestMain removes the threepidd binary the tests build.
func TestMain(m *testing.M) { os.Exit(support.RunTests(m)) }

// metricName matches the names of the metrics threepidd exports: its own and
// the Go runtime's and process's that client_golang adds.
var metricName = regexp.MustCompile(`\b(?:threepidd|go|process)_[a-zA-Z0-9_]*[a-zA-Z0-9]\b`)

// namesIn returns the metric names in every string of a decoded JSON or
// YAML document.
func namesIn(doc any) []string {
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			out = append(out, metricName.FindAllString(x, -1)...)
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(doc)
	slices.Sort(out)
	return slices.Compact(out)
}

// readDoc decodes the file at path with unmarshal (json.Unmarshal or
// yaml.Unmarshal) into a mapping.
func readDoc(t *testing.T, path string, unmarshal func([]byte, any) error) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return doc
}

// liveMetrics starts the threepidd binary (a fresh process: only the series
// it creates itself exist), answers one request, and returns the metric
// names of its /metrics.
func liveMetrics(t *testing.T) map[string]bool {
	t.Helper()
	hs := fakes.NewHomeserver(t, harness.ServerName)
	dir := t.TempDir()
	configPath := filepath.Join(dir, "threepidd.yaml")
	if err := os.WriteFile(configPath, fmt.Appendf(nil, "server_name: %s\nlisten: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\n"+
		"database: {driver: sqlite, dsn: %q}\nhomeserver: {url: %q, mirror: none}\n",
		harness.ServerName, filepath.Join(dir, "threepidd.db"), hs.URL()), 0o600); err != nil {
		t.Fatal(err)
	}
	_, api, metricsURL := support.StartThreepidd(t, configPath)
	if r, err := support.Do(t.Context(), "GET", api+"/ready", "", nil); err != nil || r.Status != 200 {
		t.Fatalf("/ready: %v %v", r, err)
	}
	r, err := support.Do(t.Context(), "GET", metricsURL+"/metrics", "", nil)
	if err != nil || r.Status != 200 {
		t.Fatalf("/metrics: %v %v", r, err)
	}
	live := map[string]bool{}
	for _, line := range strings.Split(string(r.Body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, " ")
		name, _, _ = strings.Cut(name, "{")
		live[name] = true
	}
	return live
}

// TestMetricsNamedExist: every metric named in the dashboard and the alerting
// rules is in a live /metrics of the threepidd binary, right after it starts
// and has answered one request (a panel or rule on a name that does not
// exist stays empty, or never fires).
func TestMetricsNamedExist(t *testing.T) {
	named := map[string][]string{
		dashboardFile: namesIn(readDoc(t, dashboardFile, json.Unmarshal)),
		rulesFile:     namesIn(readDoc(t, rulesFile, yaml.Unmarshal)),
	}
	live := liveMetrics(t)
	for file, names := range named {
		if len(names) < 5 {
			t.Errorf("%s names only %v: the search for metric names broke", file, names)
		}
		for _, name := range names {
			if !live[name] {
				t.Errorf("%s names %s, which threepidd's /metrics does not have", file, name)
			}
		}
	}
}

// TestDashboard: a Grafana dashboard that imports as is: a schema version, a
// Prometheus data source variable every query uses, unique panel IDs, panels
// within the 24-column grid, a PromQL query and a description on each.
func TestDashboard(t *testing.T) {
	d := readDoc(t, dashboardFile, json.Unmarshal)
	if v, _ := d["schemaVersion"].(float64); v < 36 || d["uid"] != "threepidd" || d["title"] == "" {
		t.Fatalf("schemaVersion %v, uid %v, title %v", d["schemaVersion"], d["uid"], d["title"])
	}
	vars, _ := d["templating"].(map[string]any)["list"].([]any)
	if !slices.ContainsFunc(vars, func(v any) bool {
		m, _ := v.(map[string]any)
		return m["name"] == "datasource" && m["type"] == "datasource" && m["query"] == "prometheus"
	}) {
		t.Fatalf("no Prometheus data source variable: %v", vars)
	}
	ids := map[float64]bool{}
	panels, _ := d["panels"].([]any)
	for _, p := range panels {
		panel, _ := p.(map[string]any)
		id, _ := panel["id"].(float64)
		pos, _ := panel["gridPos"].(map[string]any)
		x, _ := pos["x"].(float64)
		w, _ := pos["w"].(float64)
		if ids[id] || id == 0 || w <= 0 || x+w > 24 {
			t.Errorf("panel %v: id %v (duplicate %v), gridPos %v", panel["title"], id, ids[id], pos)
		}
		ids[id] = true
		if panel["type"] == "row" {
			continue
		}
		targets, _ := panel["targets"].([]any)
		if len(targets) == 0 || panel["description"] == "" {
			t.Errorf("panel %v: no query or no description", panel["title"])
		}
		for _, tg := range append(targets, panel) {
			m, _ := tg.(map[string]any)
			ds, _ := m["datasource"].(map[string]any)
			if ds["uid"] != "${datasource}" || ds["type"] != "prometheus" {
				t.Errorf("panel %v: data source %v, want the variable", panel["title"], ds)
			}
		}
		for _, tg := range targets {
			if expr, _ := tg.(map[string]any)["expr"].(string); !metricName.MatchString(expr) {
				t.Errorf("panel %v: query %q names no metric", panel["title"], expr)
			}
		}
	}
	if len(ids) < 10 {
		t.Fatalf("only %d panels", len(ids))
	}
}

// TestAlertRules: promtool accepts the rules and their unit tests pass, and
// each alert has a unit test in which it fires.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is missing: make test installs it (deploy/prometheus/setup.sh)")
		}
		t.Skip("promtool is missing: bash deploy/prometheus/setup.sh installs it")
	}
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTestFile}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	for file, into := range map[string]any{rulesFile: &rules, rulesTestFile: &tests} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(data, into); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			}
		}
	}
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			if !fires[r.Alert] {
				t.Errorf("alert %s has no unit test in which it fires", r.Alert)
			}
		}
	}
	if alerts < 4 {
		t.Fatalf("only %d alerts in %s", alerts, rulesFile)
	}
}
