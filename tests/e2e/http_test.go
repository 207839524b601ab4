package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/pgproxy"
	"github.com/threepidd/threepidd/tests/support"
)

// TestRequestErrors sends each bad request and checks status and errcode.
func TestRequestErrors(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		u := e.NewUser("mallory")
		_, guestToken := e.HS.AddGuest()
		const email = "/_matrix/client/v3/account/3pid/email/requestToken"
		const msisdn = "/_matrix/client/v3/account/3pid/msisdn/requestToken"
		big := `{"client_secret":"x","email":"a@b.c","send_attempt":1,"pad":"` + strings.Repeat("a", 70<<10) + `"}`
		cases := []struct {
			name, method, path, token string
			body                      any
			status                    int
			errcode                   string
		}{
			{"unknown path", "GET", "/_matrix/client/v3/account/3pid/nope", "", nil, 404, "M_UNRECOGNIZED"},
			{"unknown root", "GET", "/nothing", "", nil, 404, "M_UNRECOGNIZED"},
			{"wrong method", "PUT", "/_matrix/client/v3/account/3pid/add", u.Token, nil, 405, "M_UNRECOGNIZED"},
			{"not json", "POST", email, "", "this is not json", 400, "M_NOT_JSON"},
			{"json array", "POST", email, "", `[1,2]`, 400, "M_BAD_JSON"},
			{"wrong type", "POST", email, "", `{"client_secret":"x","email":"a@b.c","send_attempt":"one"}`, 400, "M_BAD_JSON"},
			{"fractional send_attempt", "POST", email, "", `{"client_secret":"x","email":"a@b.c","send_attempt":1.5}`, 400, "M_BAD_JSON"},
			{"email not a string", "POST", email, "", `{"client_secret":"x","email":5,"send_attempt":1}`, 400, "M_BAD_JSON"},
			{"missing client_secret", "POST", email, "", map[string]any{"email": "a@b.c", "send_attempt": 1}, 400, "M_MISSING_PARAM"},
			{"missing send_attempt", "POST", email, "", map[string]any{"email": "a@b.c", "client_secret": "x"}, 400, "M_MISSING_PARAM"},
			{"too large", "POST", email, "", big, 413, "M_TOO_LARGE"},
			{"bad client_secret", "POST", email, "", map[string]any{"client_secret": "bad secret!", "email": "a@b.c", "send_attempt": 1}, 400, "M_INVALID_PARAM"},
			{"long client_secret", "POST", email, "", map[string]any{"client_secret": strings.Repeat("a", 256), "email": "a@b.c", "send_attempt": 1}, 400, "M_INVALID_PARAM"},
			{"bad email", "POST", email, "", map[string]any{"client_secret": "x", "email": "no-at-sign", "send_attempt": 1}, 400, "M_INVALID_PARAM"},
			{"two @", "POST", email, "", map[string]any{"client_secret": "x", "email": "a@b@c", "send_attempt": 1}, 400, "M_INVALID_PARAM"},
			{"bad next_link", "POST", email, "", map[string]any{"client_secret": "x", "email": "a@b.c", "send_attempt": 1, "next_link": "ftp://x/y"}, 400, "M_INVALID_PARAM"},
			{"bad phone", "POST", msisdn, "", map[string]any{"client_secret": "x", "country": "GB", "phone_number": "abc", "send_attempt": 1}, 400, "M_INVALID_PARAM"},
			{"bad country", "POST", msisdn, "", map[string]any{"client_secret": "x", "country": "gb1", "phone_number": "07700900001", "send_attempt": 1}, 400, "M_INVALID_PARAM"},
			{"missing country", "POST", msisdn, "", map[string]any{"client_secret": "x", "phone_number": "07700900001", "send_attempt": 1}, 400, "M_MISSING_PARAM"},
			{"no token", "GET", "/_matrix/client/v3/account/3pid", "", nil, 401, "M_MISSING_TOKEN"},
			{"unknown token", "GET", "/_matrix/client/v3/account/3pid", "nope", nil, 401, "M_UNKNOWN_TOKEN"},
			{"guest", "GET", "/_matrix/client/v3/account/3pid", guestToken, nil, 403, "M_GUEST_ACCESS_FORBIDDEN"},
			{"add missing sid", "POST", "/_matrix/client/v3/account/3pid/add", u.Token, map[string]any{"client_secret": "x"}, 400, "M_MISSING_PARAM"},
			{"add bad sid", "POST", "/_matrix/client/v3/account/3pid/add", u.Token, map[string]any{"client_secret": "x", "sid": "a b"}, 400, "M_INVALID_PARAM"},
			{"delete missing medium", "POST", "/_matrix/client/v3/account/3pid/delete", u.Token, map[string]any{"address": "a@b.c"}, 400, "M_MISSING_PARAM"},
			{"delete bad medium", "POST", "/_matrix/client/v3/account/3pid/delete", u.Token, map[string]any{"medium": "fax", "address": "1"}, 400, "M_INVALID_PARAM"},
			{"delete bad address", "POST", "/_matrix/client/v3/account/3pid/delete", u.Token, map[string]any{"medium": "msisdn", "address": "call me"}, 400, "M_INVALID_PARAM"},
			{"submit missing token", "POST", "/_matrix/client/unstable/add_threepid/email/submit_token", "", map[string]any{"sid": "x", "client_secret": "y"}, 400, "M_MISSING_PARAM"},
			{"submit unknown sid", "POST", "/_matrix/client/unstable/add_threepid/email/submit_token", "", map[string]any{"sid": "x", "client_secret": "y", "token": "z"}, 400, "M_INVALID_PARAM"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := e.Do(c.method, c.path, c.token, c.body)
				harness.Expect(t, r, c.status, c.errcode)
				if r.Status >= 400 && r.ErrCode() == "" {
					t.Fatalf("error without errcode: %s", r.Body)
				}
			})
		}
	})
}

// route is a method and a path.
type route struct{ method, path string }

// clientRoutes returns every 3PID endpoint under both client prefixes, and the
// submit_token endpoints.
func clientRoutes() []route {
	var out []route
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
		for _, ep := range []route{
			{"GET", "/account/3pid"},
			{"POST", "/account/3pid"},
			{"POST", "/account/3pid/email/requestToken"},
			{"POST", "/account/3pid/msisdn/requestToken"},
			{"POST", "/account/3pid/add"},
			{"POST", "/account/3pid/bind"},
			{"POST", "/account/3pid/unbind"},
			{"POST", "/account/3pid/delete"},
		} {
			out = append(out, route{ep.method, prefix + ep.path})
		}
	}
	for _, p := range []string{emailSubmitPath, msisdnSubmitPath} {
		out = append(out, route{"GET", p}, route{"POST", p})
	}
	return out
}

// expectCORS fails unless r carries the CORS headers the spec asks for.
func expectCORS(t *testing.T, r harness.Response) {
	t.Helper()
	h := r.Header
	if h.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Content-Type") {
		t.Fatalf("CORS headers missing: %v", h)
	}
}

// chunkedPost posts n bytes with chunked transfer encoding (no
// Content-Length) and returns the answer.
func chunkedPost(t *testing.T, url, token string, n int) harness.Response {
	t.Helper()
	body := strings.NewReader(`{"pad":"` + strings.Repeat("a", n) + `"}`)
	return harness.Send(t, support.Request{Method: "POST", URL: url, Token: token, Body: body})
}

// TestHTTP: OPTIONS and CORS on every endpoint and on errors, 404 and 405 as
// Matrix errors, the 64 KiB body limit, with and without Content-Length, and
// /health.
func TestHTTP(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		u := e.NewUser("http")
		for _, ep := range clientRoutes() {
			t.Run(ep.method+ep.path, func(t *testing.T) {
				r := e.Do("OPTIONS", ep.path, "", nil)
				expectAnswer(t, r, 200, "")
				expectCORS(t, r)
				if ep.method != "POST" {
					return
				}
				// Exactly 64 KiB passes the limit (and is then refused for its
				// content); one byte more is 413, whether announced or not.
				pad := (64 << 10) - len(`{"pad":""}`)
				r = e.Do("POST", ep.path, u.Token, `{"pad":"`+strings.Repeat("a", pad)+`"}`)
				if r.Status == 413 || r.Status >= 500 || r.ErrCode() == "" {
					t.Fatalf("64 KiB body: %d %s", r.Status, r.Body)
				}
				r = e.Do("POST", ep.path, u.Token, `{"pad":"`+strings.Repeat("a", pad+1)+`"}`)
				expectAnswer(t, r, 413, "M_TOO_LARGE")
				expectCORS(t, r)
				r = chunkedPost(t, e.URL+ep.path, u.Token, 1<<20)
				expectAnswer(t, r, 413, "M_TOO_LARGE")
			})
		}
		for _, c := range []route{
			{"PUT", "/_matrix/client/v3/account/3pid"},
			{"DELETE", "/_matrix/client/r0/account/3pid"},
			{"GET", "/_matrix/client/v3/account/3pid/add"},
			{"GET", "/_matrix/client/v3/account/3pid/delete"},
			{"GET", "/_matrix/client/r0/account/3pid/bind"},
			{"GET", "/_matrix/client/v3/account/3pid/unbind"},
			{"GET", "/_matrix/client/v3/account/3pid/email/requestToken"},
			{"PUT", "/_matrix/client/v3/account/3pid/msisdn/requestToken"},
			{"DELETE", emailSubmitPath},
		} {
			t.Run("405 "+c.method+c.path, func(t *testing.T) {
				r := e.Do(c.method, c.path, u.Token, nil)
				expectAnswer(t, r, 405, "M_UNRECOGNIZED")
				expectCORS(t, r)
			})
		}
		for _, p := range []string{
			"/_matrix/client/v3/account/3pid/",
			"/_matrix/client/v3/account/3pid/fax/requestToken",
			"/_matrix/client/v2/account/3pid",
			"/_matrix/client/unstable/add_threepid/fax/submit_token",
		} {
			t.Run("404 "+p, func(t *testing.T) {
				r := e.Do("GET", p, u.Token, nil)
				expectAnswer(t, r, 404, "M_UNRECOGNIZED")
				expectCORS(t, r)
			})
		}
		t.Run("CORS on OPTIONS and errors; health", func(t *testing.T) {
			r := e.Do("OPTIONS", "/_matrix/client/v3/account/3pid/add", "", nil)
			harness.Expect(t, r, 200, "")
			if r.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
				t.Fatalf("CORS headers: %v", r.Header)
			}
			r = e.Do("GET", "/nothing", "", nil)
			if r.Header.Get("Access-Control-Allow-Origin") != "*" {
				t.Fatal("errors lack CORS headers")
			}
			harness.Expect(t, e.Do("GET", "/health", "", nil), 200, "")
		})
	})
}

// TestRateLimit: requestToken over either limit answers 429 M_LIMIT_EXCEEDED
// with Retry-After (whole seconds) and retry_after_ms that agree, sends
// nothing, and counts an address in its canonical form.
func TestRateLimit(t *testing.T) {
	tests := []struct {
		name, rateLimit string
		run             func(t *testing.T, e *harness.Env)
	}{
		{"per address", "{requesttoken_per_ip: {per_second: 0.01, burst: 100}, requesttoken_per_address: {per_second: 0.01, burst: 2}}", func(t *testing.T, e *harness.Env) {
			for i := 1; i <= 2; i++ {
				e.RequestEmailToken(t, "sec", "flood@example.org", i)
			}
			r := e.Do("POST", "/_matrix/client/v3/account/3pid/email/requestToken", "", map[string]any{"client_secret": "sec", "email": "flood@example.org", "send_attempt": 3})
			harness.Expect(t, r, 429, "M_LIMIT_EXCEEDED")
			if s, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || s <= 0 {
				t.Fatalf("Retry-After = %q", r.Header.Get("Retry-After"))
			}
		}},
		{"per IP", "{requesttoken_per_ip: {per_second: 0.01, burst: 2}}", func(t *testing.T, e *harness.Env) {
			for i := 0; i < 2; i++ {
				e.RequestEmailToken(t, "sec", "ip"+strconv.Itoa(i)+"@example.org", 1)
			}
			r := e.Do("POST", "/_matrix/client/v3/account/3pid/email/requestToken", "", map[string]any{"client_secret": "sec", "email": "ip9@example.org", "send_attempt": 1})
			harness.Expect(t, r, 429, "M_LIMIT_EXCEEDED")
		}},
		{"per IPv6 /64", "{requesttoken_per_ip: {per_second: 0.01, burst: 2}}", func(t *testing.T, e *harness.Env) {
			// threepidd believes X-Forwarded-For from 127.0.0.1 (trusted_proxies).
			from := func(ip, email string) harness.Response {
				return harness.Send(t, support.Request{Method: "POST", URL: e.URL + requestTokenPath,
					Body:   map[string]any{"client_secret": "sec", "email": email, "send_attempt": 1},
					Header: http.Header{"X-Forwarded-For": {ip}}})
			}
			expectAnswer(t, from("2001:db8:1:2::1", "v6a@example.org"), 200, "")
			expectAnswer(t, from("2001:db8:1:2:ffff:ffff:ffff:fffe", "v6b@example.org"), 200, "")
			// One /64 is one client, however many addresses it takes from it.
			expectAnswer(t, from("2001:db8:1:2:abcd::7", "v6c@example.org"), 429, "M_LIMIT_EXCEEDED")
			expectAnswer(t, from("2001:db8:1:3::1", "v6d@example.org"), 200, "")
			// IPv4 addresses are clients of their own, also written as IPv4-mapped IPv6.
			expectAnswer(t, from("203.0.113.1", "v4a@example.org"), 200, "")
			expectAnswer(t, from("203.0.113.2", "v4b@example.org"), 200, "")
			expectAnswer(t, from("::ffff:203.0.113.1", "v4c@example.org"), 200, "")
			expectAnswer(t, from("203.0.113.1", "v4d@example.org"), 429, "M_LIMIT_EXCEEDED")
		}},
		{"both: the answer, canonical addresses, both media, nothing sent", "{requesttoken_per_ip: {per_second: 0.01, burst: 4}, requesttoken_per_address: {per_second: 0.01, burst: 2}}", func(t *testing.T, e *harness.Env) {
			const path = "/_matrix/client/v3/account/3pid/email/requestToken"
			limited := func(t *testing.T, r harness.Response) {
				t.Helper()
				expectAnswer(t, r, 429, "M_LIMIT_EXCEEDED")
				secs, err := strconv.Atoi(r.Header.Get("Retry-After"))
				ms, _ := r.JSON(t)["retry_after_ms"].(float64)
				if err != nil || secs <= 0 || ms <= 0 || float64(secs) < ms/1000 || float64(secs) > ms/1000+1 {
					t.Fatalf("Retry-After %q and retry_after_ms %v disagree", r.Header.Get("Retry-After"), ms)
				}
				expectCORS(t, r)
			}
			// Per address, whatever the spelling.
			for i, spelling := range []string{"flood@example.org", "FLOOD@Example.org"} {
				expectAnswer(t, e.Do("POST", path, "", map[string]any{"client_secret": "s", "email": spelling, "send_attempt": i + 1}), 200, "")
			}
			mails := len(e.SMTP.Mails())
			limited(t, e.Do("POST", path, "", map[string]any{"client_secret": "s", "email": " Flood@EXAMPLE.org", "send_attempt": 3}))
			// Per IP, across addresses and both media.
			expectAnswer(t, e.Do("POST", path, "", map[string]any{"client_secret": "s", "email": "other@example.org", "send_attempt": 1}), 200, "")
			limited(t, e.Do("POST", "/_matrix/client/r0/account/3pid/msisdn/requestToken", "", map[string]any{"client_secret": "s", "country": "GB", "phone_number": "07700900999", "send_attempt": 1}))
			time.Sleep(100 * time.Millisecond)
			if n := len(e.SMTP.Mails()) - mails; n != 1 {
				t.Fatalf("%d mails after the limit, want 1 (other@)", n)
			}
			if n := len(e.SMS.Messages()); n != 0 {
				t.Fatalf("a limited request sent %d SMS", n)
			}
		}},
	}
	// Each case has databases of its own: the buckets live there.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			harness.Run(t, func(t *testing.T, b storagetest.Backend) {
				tt.run(t, harness.Start(t, b, harness.Options{RateLimitYAML: tt.rateLimit}))
			})
		})
	}
}

// TestForwardedHeaders: whoami sees the client's address (from a trusted proxy's
// X-Forwarded-For) and User-Agent; whoami answers are cached.
func TestForwardedHeaders(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		u := e.NewUser("xff")
		req := map[string]string{"X-Forwarded-For": "203.0.113.9, 127.0.0.1", "User-Agent": "test-client/1"}
		r := harness.DoHeaders(t, "GET", e.URL+"/_matrix/client/v3/account/3pid", u.Token, req)
		harness.Expect(t, r, 200, "")
		h := e.HS.LastHeaders("/_matrix/client/v3/account/whoami")
		if h.Get("X-Forwarded-For") != "203.0.113.9" || h.Get("User-Agent") != "test-client/1" {
			t.Fatalf("homeserver saw X-Forwarded-For %q User-Agent %q", h.Get("X-Forwarded-For"), h.Get("User-Agent"))
		}
		calls := e.HS.WhoamiCalls()
		harness.Expect(t, e.Do("GET", "/_matrix/client/v3/account/3pid", u.Token, nil), 200, "")
		if e.HS.WhoamiCalls() != calls {
			t.Fatal("whoami answer was not cached")
		}
	})
}

// TestReady: /ready answers 200 while the database and the homeserver
// answer; 503 M_UNKNOWN naming the homeserver while the homeserver is down
// (its check is cached a few seconds), and naming the database while the
// connections to Postgres are cut (through a TCP proxy), /health then failing
// too; both recover without a restart.
func TestReady(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		var proxy *pgproxy.Proxy
		if b.Driver == "postgres" {
			u, err := url.Parse(b.DSN)
			if err != nil {
				t.Fatal(err)
			}
			if proxy, err = pgproxy.New(u.Host); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { proxy.Close() })
			if b.DSN, err = proxy.DSN(b.DSN); err != nil {
				t.Fatal(err)
			}
		}
		e := harness.Start(t, b, harness.Options{})
		waitReady := func(status int, message string) {
			t.Helper()
			var r harness.Response
			support.WaitFor(t, fmt.Sprintf("/ready to answer %d", status), func() bool {
				r = e.Do("GET", "/ready", "", nil)
				return r.Status == status
			}, 15*time.Second)
			if status != 200 && (r.ErrCode() != "M_UNKNOWN" || r.JSON(t)["error"] != message) {
				t.Fatalf("/ready: %s", r)
			}
		}
		waitReady(200, "")

		e.HS.SetDown(true)
		waitReady(503, "homeserver unreachable")
		harness.Expect(t, e.Do("GET", "/health", "", nil), 200, "")
		e.HS.SetDown(false)
		waitReady(200, "")

		if proxy == nil {
			return // a SQLite file cannot become unreachable
		}
		proxy.Cut()
		waitReady(503, "database unreachable")
		harness.Expect(t, e.Do("GET", "/health", "", nil), 503, "M_UNKNOWN")
		if err := proxy.Restore(); err != nil {
			t.Fatal(err)
		}
		waitReady(200, "")
	})
}

// TestRequestIDs: a request's X-Request-ID from a trusted proxy is echoed,
// written on each of its log lines, and sent on the calls made on its behalf
// to the identity server and the homeserver; a request without one, with an
// unsafe one, or from a peer that is not a trusted proxy gets a fresh ID,
// passed on the same way.
func TestRequestIDs(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		logs := support.CaptureLogs(t)
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		alice := e.NewUser("rid-alice")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "rid@example.org"), 200, "")

		// An unbind the identity server fails: queued, with a warning.
		e.IS[0].SetMode(fakes.IdentityServerFail500)
		seen := len(e.IS[0].RequestIDs())
		r := harness.Send(t, support.Request{Method: "POST", URL: e.URL + "/_matrix/client/v3/account/3pid/unbind", Token: alice.Token,
			Body:   map[string]any{"medium": "email", "address": "rid@example.org", "id_server": e.IS[0].Name()},
			Header: http.Header{"X-Request-ID": {"unbind-req-42"}}})
		harness.Expect(t, r, 200, "")
		if got := r.Header.Get("X-Request-ID"); got != "unbind-req-42" {
			t.Fatalf("answer's X-Request-ID %q", got)
		}
		ids := e.IS[0].RequestIDs()[seen:]
		if len(ids) == 0 || slices.ContainsFunc(ids, func(id string) bool { return id != "unbind-req-42" }) {
			t.Fatalf("the identity server got X-Request-ID %q", ids)
		}
		lines := linesWith(logs.String(), "request_id=unbind-req-42")
		if len(lines) < 2 || !strings.Contains(lines[0]+lines[1], "unbind queued for retry") ||
			!strings.Contains(strings.Join(lines, "\n"), `msg=request method=POST route=/_matrix/client/v3/account/3pid/unbind status=200`) {
			t.Fatalf("the request's log lines:\n%s\nall:\n%s", strings.Join(lines, "\n"), logs)
		}
		for _, line := range linesWith(logs.String(), "unbind queued for retry") {
			if !strings.Contains(line, "request_id=unbind-req-42") {
				t.Fatalf("a line of the request without its ID: %s", line)
			}
		}

		// Passed through to the homeserver; fresh IDs where none may be taken.
		const keyChanges = "/_matrix/client/v3/keys/changes"
		for _, header := range []string{"", "bad id", strings.Repeat("x", 129)} {
			h := http.Header{}
			if header != "" {
				h.Set("X-Request-ID", header)
			}
			r := harness.Send(t, support.Request{Method: "GET", URL: e.URL + keyChanges + "?from=s0_34~x.0", Token: alice.Token, Header: h})
			harness.Expect(t, r, 200, "")
			id := r.Header.Get("X-Request-ID")
			if len(id) != 32 || id == header || e.HS.LastHeaders(keyChanges).Get("X-Request-ID") != id {
				t.Fatalf("sent %q: answered %q, the homeserver got %q", header, id, e.HS.LastHeaders(keyChanges).Get("X-Request-ID"))
			}
		}
		r = harness.Send(t, support.Request{Method: "GET", URL: e.URL + keyChanges + "?from=s0_34~x.0", Token: alice.Token,
			Header: http.Header{"X-Request-ID": {"4f6a1c2e-trace"}}})
		if got := e.HS.LastHeaders(keyChanges).Get("X-Request-ID"); r.Header.Get("X-Request-ID") != "4f6a1c2e-trace" || got != "4f6a1c2e-trace" {
			t.Fatalf("answered %q, the homeserver got %q", r.Header.Get("X-Request-ID"), got)
		}

		untrusting := harness.Start(t, b, harness.Options{ExtraYAML: "trusted_proxies: [10.0.0.0/8]\n"})
		bob := untrusting.NewUser("rid-bob")
		r = harness.Send(t, support.Request{Method: "GET", URL: untrusting.URL + keyChanges + "?from=s0_34~x.0", Token: bob.Token,
			Header: http.Header{"X-Request-ID": {"forged-by-client"}}})
		if id := r.Header.Get("X-Request-ID"); len(id) != 32 || untrusting.HS.LastHeaders(keyChanges).Get("X-Request-ID") != id {
			t.Fatalf("from an untrusted peer: answered %q, the homeserver got %q", id, untrusting.HS.LastHeaders(keyChanges).Get("X-Request-ID"))
		}
	})
}

// linesWith returns the lines of logs that contain s.
func linesWith(logs, s string) []string {
	var out []string
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}
