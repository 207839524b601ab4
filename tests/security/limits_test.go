package security

import (
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
)

// hugeBody is the size of the bodies TestBodiesBounded sends.
const hugeBody = 10 << 20

// bodyReader yields a body of n bytes, starting like a JSON object, without
// holding it in memory.
type bodyReader struct{ sent, n int64 }

func (r *bodyReader) Read(p []byte) (int, error) {
	if r.sent >= r.n {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n-r.sent)]
	for i := range p {
		p[i] = 'a'
	}
	if r.sent == 0 {
		p[0] = '{'
	}
	r.sent += int64(len(p))
	return len(p), nil
}

// TestBodiesBounded: a 10 MB body to each POST endpoint answers 413
// M_TOO_LARGE, whether its length is declared or not (chunked), and the
// process does not allocate anything like the body's size to say so.
// (POST /_threepidd/admin/v1/users/{userId}/deactivate takes no body and
// never reads one.)
func TestBodiesBounded(t *testing.T) {
	b := storagetest.Backends(t)[0] // the HTTP layer does not depend on the store
	e := harness.Start(t, b, harness.Options{IdentityServers: 1})
	u := e.NewUser("bulky")
	endpoints := []struct {
		path string
		auth bool
		// limit is the endpoint's body limit: 64 KiB but for sliding sync.
		limit int
	}{
		{"/_matrix/client/v3/account/3pid/email/requestToken", false, 64 << 10},
		{"/_matrix/client/v3/account/3pid/msisdn/requestToken", false, 64 << 10},
		{"/_matrix/client/r0/account/3pid/email/requestToken", false, 64 << 10},
		{emailSubmitPath, false, 64 << 10},
		{msisdnSubmitPath, false, 64 << 10},
		{threepidPath + "/add", true, 64 << 10},
		{deletePath, true, 64 << 10},
		{threepidPath + "/bind", true, 64 << 10},
		{unbindPath, true, 64 << 10},
		{threepidPath, true, 64 << 10}, // the deprecated bind
		{"/_matrix/client/r0/account/3pid/add", true, 64 << 10},
		{"/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", true, 1 << 20},
		{onupdate.Path, false, 64 << 10},
	}
	client := support.Client{HTTP: &http.Client{Timeout: 30 * time.Second}}
	for _, ep := range endpoints {
		for _, declared := range []bool{true, false} {
			name := ep.path + map[bool]string{true: " (Content-Length)", false: " (chunked)"}[declared]
			t.Run(name, func(t *testing.T) {
				req := support.Request{Method: "POST", URL: e.URL + ep.path, Body: &bodyReader{n: hugeBody}}
				if declared {
					req.ContentLength = hugeBody
				}
				if ep.auth {
					req.Token = u.Token
				}
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				r, err := client.Send(t.Context(), req)
				if err != nil {
					t.Fatalf("no answer: %v", err)
				}
				runtime.ReadMemStats(&after)
				if r.Status != 413 || !strings.Contains(string(r.Body), `"M_TOO_LARGE"`) {
					t.Fatalf("answered %s, want 413 M_TOO_LARGE", r)
				}
				harness.CheckResponse(t, "POST", ep.path, r.Status, r.Body)
				// Reading up to the limit may cost a few times the limit
				// (a growing buffer), never the body.
				if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(6*ep.limit+1<<20) {
					t.Errorf("allocated %d bytes while refusing a %d-byte body (limit %d)", alloc, hugeBody, ep.limit)
				}
			})
		}
	}
}

// TestSlowClientDisconnected: a client that sends its request header one
// byte at a time (slowloris) is disconnected once the server's header
// timeout (10 s) is up; the request is never served.
func TestSlowClientDisconnected(t *testing.T) {
	t.Parallel()
	const (
		headerTimeout = 10 * time.Second // server.go's ReadHeaderTimeout
		margin        = 3 * time.Second
		interval      = 250 * time.Millisecond
	)
	e := harness.Start(t, storagetest.Backends(t)[0], harness.Options{})
	conn, err := net.Dial("tcp", e.Server.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	began := time.Now()
	_ = conn.SetReadDeadline(began.Add(headerTimeout + 2*margin)) // the test's own bound
	closed := make(chan error, 1)
	var answer []byte
	go func() {
		var err error
		answer, err = io.ReadAll(conn)
		closed <- err
	}()
	header := "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + strings.Repeat("s", 200)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for i := 0; ; i++ {
		if i < len(header) {
			if _, err := conn.Write([]byte{header[i]}); err != nil {
				t.Logf("write after %v: %v", time.Since(began).Round(time.Millisecond), err)
			}
		}
		select {
		case err := <-closed:
			took := time.Since(began)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the server kept the slow connection open for %v", took)
			}
			// Go's server may say why it hangs up (400 or 408), never more.
			if len(answer) > 0 && !strings.HasPrefix(string(answer), "HTTP/1.1 400 ") && !strings.HasPrefix(string(answer), "HTTP/1.1 408 ") {
				t.Fatalf("the slow request was answered: %q", answer)
			}
			if took < headerTimeout-time.Second || took > headerTimeout+margin {
				t.Fatalf("disconnected after %v, want about %v", took, headerTimeout)
			}
			t.Logf("disconnected after %v having sent %d bytes", took.Round(time.Millisecond), min(i+1, len(header)))
			return
		case <-ticker.C:
		}
	}
}
