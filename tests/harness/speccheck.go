package harness

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/url"
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

// checkSpec validates r, the answer to method url, with [CheckResponse] when
// the request went to a threepidd of this package. A gzip body (asked for
// with Accept-Encoding) is checked decompressed.
func checkSpec(t testing.TB, method, rawURL string, r Response) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		return // the request itself failed on it
	}
	threepidds.Lock()
	ours := threepidds.addrs[u.Host]
	threepidds.Unlock()
	if !ours {
		return
	}
	body := r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err == nil {
			body, err = io.ReadAll(zr)
		}
		if err != nil {
			t.Errorf("%s %s -> %d: gzip body: %v", method, rawURL, r.Status, err)
			return
		}
	}
	CheckResponse(t, method, u.EscapedPath(), r.Status, body)
}

// CheckResponse validates one answer of threepidd against the Matrix spec's
// OpenAPI (package specval: the documented schema of the operation and status,
// and error.yaml for any 4xx/5xx JSON body) and reports a violation with
// t.Errorf. [Send] calls it for every answer from threepidd.
func CheckResponse(t testing.TB, method, path string, status int, body []byte) {
	t.Helper()
	if err := specval.Default().Check(method, path, status, body); err != nil {
		t.Errorf("response violates the Matrix spec: %s %s -> %d: %v\nbody: %s", method, path, status, err, body)
	}
}
