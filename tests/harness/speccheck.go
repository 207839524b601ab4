package harness

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/threepidd/threepidd/tests/specval"
)

// threepidds holds the host:port of every running threepidd started by this
// package. Answers from these addresses are checked against the Matrix spec;
// the fakes and other servers answer as they please.
var threepidds = struct {
	sync.Mutex
	addrs map[string]bool
}{addrs: make(map[string]bool)}

// registerThreepidd marks addr as a threepidd whose answers are checked.
func registerThreepidd(addr string) {
	threepidds.Lock()
	defer threepidds.Unlock()
	threepidds.addrs[addr] = true
}

// unregisterThreepidd forgets addr (the port may be reused by something else).
func unregisterThreepidd(addr string) {
	threepidds.Lock()
	defer threepidds.Unlock()
	delete(threepidds.addrs, addr)
}

// checkSpec validates resp, whose body was read into body, with
// [CheckResponse] when its request went to a threepidd of this package. A
// gzip body (asked for with Accept-Encoding) is checked decompressed.
func checkSpec(t testing.TB, resp *http.Response, body []byte) {
	t.Helper()
	req := resp.Request
	threepidds.Lock()
	ours := threepidds.addrs[req.URL.Host]
	threepidds.Unlock()
	if !ours {
		return
	}
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err == nil {
			body, err = io.ReadAll(zr)
		}
		if err != nil {
			t.Errorf("%s %s -> %d: gzip body: %v", req.Method, req.URL, resp.StatusCode, err)
			return
		}
	}
	CheckResponse(t, req.Method, req.URL.EscapedPath(), resp.StatusCode, body)
}

// CheckResponse validates one answer of threepidd against the Matrix spec's
// OpenAPI (package specval: the documented schema of the operation and status,
// and error.yaml for any 4xx/5xx JSON body) and reports a violation with
// t.Errorf. [Do] and [DoHeaders] call it for every answer from threepidd.
func CheckResponse(t testing.TB, method, path string, status int, body []byte) {
	t.Helper()
	if err := specval.Default().Check(method, path, status, body); err != nil {
		t.Errorf("response violates the Matrix spec: %s %s -> %d: %v\nbody: %s", method, path, status, err, body)
	}
}
