package router_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/threepidd/threepidd/metrics/metricstest"
	"github.com/threepidd/threepidd/router"
)

// TestWrapMetricsByRoute: requests are counted under the template of the
// route that matched (with its method and status), or "unmatched".
func TestWrapMetricsByRoute(t *testing.T) {
	routes := router.NewRouter()
	routes.HandleFunc("/things/{id}", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
	}).Methods(http.MethodGet)
	srv := httptest.NewServer(router.Wrap(routes, nil))
	t.Cleanup(srv.Close)

	count := func(route, method, status string) float64 {
		return metricstest.Value(t, "threepidd_http_requests_total", "route", route, "method", method, "status", status)
	}
	for _, tc := range []struct {
		method, path                      string
		wantStatus                        int
		route, metricMethod, metricStatus string
	}{
		{http.MethodGet, "/things/42", http.StatusAccepted, "/things/{id}", "GET", "202"},
		{http.MethodPost, "/things/42", http.StatusMethodNotAllowed, "unmatched", "POST", "405"},
		{http.MethodGet, "/nothing", http.StatusNotFound, "unmatched", "GET", "404"},
		// A made-up method is one series, whatever its name.
		{"BREW", "/things/42", http.StatusMethodNotAllowed, "unmatched", "other", "405"},
		{"XYZZY", "/nothing", http.StatusNotFound, "unmatched", "other", "404"},
	} {
		before := count(tc.route, tc.metricMethod, tc.metricStatus)
		req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.wantStatus {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.wantStatus)
		}
		if got := count(tc.route, tc.metricMethod, tc.metricStatus) - before; got != 1 {
			t.Errorf("%s %s: counted %v times under route %q, want once", tc.method, tc.path, got, tc.route)
		}
	}
}

// TestWrapCORSShared: every response carries the CORS headers, whatever an
// earlier handler did to its own copy of them (their values are shared
// between responses).
func TestWrapCORSShared(t *testing.T) {
	routes := router.NewRouter()
	routes.HandleFunc("/greedy", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Add("Access-Control-Allow-Origin", "https://evil.example")
		w.Header().Set("Access-Control-Allow-Methods", "GET")
	})
	routes.HandleFunc("/plain", func(http.ResponseWriter, *http.Request) {})
	srv := httptest.NewServer(router.Wrap(routes, nil))
	t.Cleanup(srv.Close)

	for _, path := range []string{"/greedy", "/plain", "/greedy", "/plain"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if path != "/plain" {
			continue
		}
		h := resp.Header
		if got := h.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != "*" {
			t.Errorf("Access-Control-Allow-Origin %q after a handler added to it", got)
		}
		if got := h.Get("Access-Control-Allow-Methods"); got != "GET, POST, PUT, DELETE, OPTIONS" {
			t.Errorf("Access-Control-Allow-Methods %q after a handler replaced it", got)
		}
		if len(h.Get("X-Request-ID")) != 32 {
			t.Errorf("X-Request-ID %q, want a new 32-digit ID", h.Get("X-Request-ID"))
		}
	}
}
