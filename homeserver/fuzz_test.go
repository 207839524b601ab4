package homeserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/mxerr"
)

// fuzzUpstream answers every request with one status and body.
type fuzzUpstream struct {
	status int
	body   []byte
}

func (u fuzzUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return &http.Response{
		StatusCode: u.status, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}},
		Body:   io.NopCloser(bytes.NewReader(u.body)), Request: r,
	}, nil
}

// FuzzUpstreamAnswer gives WhoAmI and RelayUIA an arbitrary homeserver answer
// (status 100-599, any body) and checks what reaches the client: a whoami
// succeeds only on a 200 naming a user; UIA counts as passed only on a 2xx or
// 400 M_THREEPID_AUTH_FAILED; an upstream body is passed back unchanged only
// when it is a 4xx Matrix error (or a UIA 401); anything else is a Matrix
// error of threepidd's own. Its seed corpus is testdata/fuzz/FuzzUpstreamAnswer.
func FuzzUpstreamAnswer(f *testing.F) {
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		status = 100 + (status%500+500)%500
		for _, kind := range []string{"synapse", "dendrite"} {
			c, err := homeserver.New(config.Homeserver{URL: "http://hs.test", Kind: kind}, fuzzUpstream{status, body})
			if err != nil {
				t.Fatal(err)
			}
			caller := homeserver.Caller{AccessToken: "token", ClientIP: "192.0.2.1"}
			id, err := c.WhoAmI(context.Background(), caller)
			if err == nil {
				if status != http.StatusOK || id.UserID == "" {
					t.Fatalf("whoami answered %d %q: accepted as %+v", status, body, id)
				}
			} else {
				rawOK := (status == 401 || status == 403 || status == 429) && hasErrCode(body, "")
				checkUpstreamError(t, "whoami", status, body, err, rawOK)
			}
			err = c.RelayUIA(context.Background(), caller, "@u:hs.test", json.RawMessage(`{"type":"m.login.password"}`))
			if err == nil {
				if status/100 != 2 && (status != 400 || !hasErrCode(body, "M_THREEPID_AUTH_FAILED")) {
					t.Fatalf("%s UIA relay answered %d %q: counted as passed", kind, status, body)
				}
				continue
			}
			checkUpstreamError(t, kind+" UIA relay", status, body, err, status == 401 || status/100 == 4 && hasErrCode(body, ""))
		}
	})
}

// checkUpstreamError fails unless err is a *mxerr.Raw carrying the upstream
// answer unchanged (allowed only when rawOK), or an *mxerr.Error with a 4xx
// or 5xx status and an errcode.
func checkUpstreamError(t *testing.T, call string, status int, body []byte, err error, rawOK bool) {
	t.Helper()
	var raw *mxerr.Raw
	if errors.As(err, &raw) {
		if !rawOK || raw.Status != status || !bytes.Equal(raw.Body, body) {
			t.Fatalf("%s answered %d %q: passed back as %d %q", call, status, body, raw.Status, raw.Body)
		}
		return
	}
	var me *mxerr.Error
	if !errors.As(err, &me) || me.Status < 400 || me.Status > 599 || me.ErrCode == "" {
		t.Fatalf("%s answered %d %q: error %#v is not a Matrix error", call, status, body, err)
	}
}

// hasErrCode reports whether body carries a string errcode (equal to want
// unless want is empty), read as leniently as the client reads it.
func hasErrCode(body []byte, want string) bool {
	var m struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(body, &m)
	return m.ErrCode != "" && (want == "" || m.ErrCode == want)
}
