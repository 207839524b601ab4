package harness

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// recorder is a testing.TB that keeps Errorf messages instead of failing.
type recorder struct {
	testing.TB
	errors []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

// TestSpecHook proves that every answer Do and DoHeaders receive from a
// registered threepidd is checked against the spec, and that answers from
// other servers (the fakes) are not.
func TestSpecHook(t *testing.T) {
	const deletePath = "/_matrix/client/v3/account/3pid/delete"
	bodies := map[string]string{
		"/bad":  `{}`, // no id_server_unbind_result
		"/good": `{"id_server_unbind_result":"success"}`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := bodies[r.URL.Query().Get("answer")]
		if r.URL.Query().Get("gzip") != "" {
			w.Header().Set("Content-Encoding", "gzip")
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write([]byte(body))
			zw.Close()
			body = b.String()
		}
		w.Write([]byte(body))
	}))
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	do := map[string]func(tb testing.TB, query string){
		"Do": func(tb testing.TB, query string) { Do(tb, "POST", srv.URL+deletePath+query, "", map[string]any{}) },
		"DoHeaders": func(tb testing.TB, query string) {
			DoHeaders(tb, "POST", srv.URL+deletePath+query, "", map[string]string{"Accept-Encoding": "gzip"})
		},
	}
	tests := []struct {
		name, query string
		registered  bool
		wantError   bool
	}{
		{"bad answer from threepidd", "?answer=/bad", true, true},
		{"bad gzip answer from threepidd", "?answer=/bad&gzip=1", true, true},
		{"good answer from threepidd", "?answer=/good", true, false},
		{"good gzip answer from threepidd", "?answer=/good&gzip=1", true, false},
		{"bad answer from a fake", "?answer=/bad", false, false},
	}
	for fn, call := range do {
		for _, tc := range tests {
			t.Run(fn+"/"+tc.name, func(t *testing.T) {
				if tc.registered {
					registerThreepidd(u.Host)
					defer unregisterThreepidd(u.Host)
				}
				rec := &recorder{TB: t}
				call(rec, tc.query)
				if got := len(rec.errors) > 0; got != tc.wantError {
					t.Fatalf("reported errors %q, want some: %v", rec.errors, tc.wantError)
				}
				if tc.wantError && !strings.Contains(rec.errors[0], `required property "id_server_unbind_result" missing`) {
					t.Errorf("report does not name the violation: %s", rec.errors[0])
				}
			})
		}
	}
}

func TestCheckResponse(t *testing.T) {
	rec := &recorder{TB: t}
	CheckResponse(rec, "GET", "/_matrix/client/v3/account/3pid", 200, []byte(`{"threepids":[{"medium":"email"}]}`))
	if len(rec.errors) != 1 || !strings.Contains(rec.errors[0], `required property "address" missing`) {
		t.Errorf("bad body: got reports %q", rec.errors)
	}
	rec.errors = nil
	CheckResponse(rec, "GET", "/_matrix/client/v3/account/3pid", 200, []byte(`{"threepids":[]}`))
	if len(rec.errors) != 0 {
		t.Errorf("good body: got reports %q", rec.errors)
	}
}
