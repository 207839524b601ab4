package support

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestSend: each kind of body, the bearer token, extra headers (several
// values of one name included) and redirects handed back.
func TestSend(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
			return
		}
		body, _ := io.ReadAll(r.Body)
		if len(body) == 0 {
			body = []byte("null")
		}
		w.Header().Set("X-Length", r.Header.Get("Content-Length"))
		w.Header().Set("X-Chunked", strings.Join(r.TransferEncoding, ","))
		w.Header().Set("X-Type", r.Header.Get("Content-Type"))
		w.Header().Set("X-Auth", strings.Join(r.Header.Values("Authorization"), "|"))
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write([]byte(`{"errcode":"M_X","got":` + string(body) + `}`))
	}))
	t.Cleanup(srv.Close)
	tests := []struct {
		name                             string
		req                              Request
		body, length, chunked, typ, auth string
	}{
		{"no body", Request{Method: "GET", Token: "tok"}, `{"errcode":"M_X","got":null}`, "", "", "", "Bearer tok"},
		{"JSON value", Request{Method: "POST", Body: map[string]int{"a": 1}}, `{"errcode":"M_X","got":{"a":1}}`, "7", "", "application/json", ""},
		{"string as is", Request{Method: "POST", Body: `"s"`}, `{"errcode":"M_X","got":"s"}`, "3", "", "application/json", ""},
		{"reader, chunked", Request{Method: "POST", Body: strings.NewReader("[1]")}, `{"errcode":"M_X","got":[1]}`, "", "chunked", "application/json", ""},
		{"reader, declared", Request{Method: "POST", Body: strings.NewReader("[2]"), ContentLength: 3}, `{"errcode":"M_X","got":[2]}`, "3", "", "application/json", ""},
		{"headers", Request{Method: "POST", Body: []byte("1"), Token: "tok", Header: http.Header{"Authorization": {"a", "b"}, "Content-Type": {"text/plain"}}},
			`{"errcode":"M_X","got":1}`, "1", "", "text/plain", "a|b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.URL = srv.URL + "/echo"
			r, err := Send(t.Context(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			got := []string{string(r.Body), r.Header.Get("X-Length"), r.Header.Get("X-Chunked"), r.Header.Get("X-Type"), r.Header.Get("X-Auth")}
			want := []string{tt.body, tt.length, tt.chunked, tt.typ, tt.auth}
			if r.Status != http.StatusTeapot || r.ErrCode() != "M_X" || strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("got %d %q, want %q", r.Status, got, want)
			}
		})
	}
	r, err := Do(t.Context(), "GET", srv.URL+"/redirect", "", nil)
	if err != nil || r.Status != http.StatusFound {
		t.Fatalf("redirect: %v %v", r, err)
	}
	if _, err := r.Object(); err == nil {
		t.Fatalf("a redirect's body decoded as an object: %s", r.Body)
	}
}

// TestProcess: a line waited for in this run's output only, a stop with
// SIGTERM, the exit status, and the tail of the output.
func TestProcess(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.log")
	if err := os.WriteFile(out, []byte("ready 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := StartProcess("sh", exec.Command("sh", "-c", `echo one; sleep 0.2; echo "ready 1" >&2; trap 'exit 3' TERM; while :; do sleep 0.05; done`), out)
	if err != nil {
		t.Fatal(err)
	}
	m, err := p.WaitLine(regexp.MustCompile(`^ready (\d)`), 10*time.Second)
	if err != nil || m[1] != "1" {
		t.Fatalf("WaitLine: %q %v", m, err)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.ExitErr(); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("exit: %v", err)
	}
	if err := p.Stop(time.Second); err == nil {
		t.Fatal("a second Stop did not fail")
	}
	if tail, err := Tail(out, 2); err != nil || tail != "one\nready 1" {
		t.Fatalf("tail %q %v", tail, err)
	}
	if _, err := p.WaitLine(regexp.MustCompile("never"), 10*time.Second); err == nil {
		t.Fatal("WaitLine of an exited process did not fail")
	}
}

// TestCaptureLogs: debug records, no times, and the logger restored.
func TestCaptureLogs(t *testing.T) {
	prev := slog.Default()
	t.Run("capture", func(t *testing.T) {
		logs := CaptureLogs(t)
		slog.Debug("quiet", "code", 123456)
		if got := logs.String(); got != "level=DEBUG msg=quiet code=123456\n" {
			t.Fatalf("captured %q", got)
		}
	})
	if slog.Default() != prev {
		t.Fatal("the default logger was not restored")
	}
}
