package e2e

import (
	"strconv"
	"strings"
	"testing"

	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/harness"
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

// TestUIARelay: no auth → the homeserver's 401 flows; a wrong password → the
// homeserver's 401 M_FORBIDDEN passed back; an unvalidated session after a
// right password → M_THREEPID_AUTH_FAILED; the caller keeps every device.
func TestUIARelay(t *testing.T) {
	for _, kind := range []string{"synapse", "dendrite"} {
		t.Run(kind, func(t *testing.T) {
			harness.Run(t, func(t *testing.T, b storagetest.Backend) {
				e := harness.Start(t, b, harness.Options{Kind: kind})
				u := e.NewUser("uia")
				other, _ := e.HS.Login(u.ID)
				_ = other
				devicesBefore := len(e.HS.Devices(u.ID))
				sid := e.RequestEmailToken(t, "sec", "uia@example.org", 1)
				r := e.Do("POST", "/_matrix/client/v3/account/3pid/add", u.Token, map[string]any{"sid": sid, "client_secret": "sec"})
				harness.Expect(t, r, 401, "")
				body := r.JSON(t)
				if body["flows"] == nil || body["session"] == nil {
					t.Fatalf("401 without flows/session: %s", r.Body)
				}
				bad := u.PasswordAuth(body["session"].(string))
				bad["password"] = "wrong"
				r = e.Do("POST", "/_matrix/client/v3/account/3pid/add", u.Token, map[string]any{"sid": sid, "client_secret": "sec", "auth": bad})
				harness.Expect(t, r, 401, "M_FORBIDDEN")
				// A thief with u's token and their own password gets nowhere.
				thief := e.NewUser("thief")
				r = e.Do("POST", "/_matrix/client/v3/account/3pid/add", u.Token, map[string]any{"sid": sid, "client_secret": "sec", "auth": thief.PasswordAuth(body["session"].(string))})
				if r.Status != 401 && r.Status != 403 {
					t.Fatalf("another user's password: %d %s", r.Status, r.Body)
				}
				r = e.Do("POST", "/_matrix/client/v3/account/3pid/add", u.Token, map[string]any{"sid": sid, "client_secret": "sec", "auth": u.PasswordAuth(body["session"].(string))})
				harness.Expect(t, r, 400, "M_THREEPID_AUTH_FAILED")
				if n := len(e.HS.Devices(u.ID)); n != devicesBefore {
					t.Fatalf("devices %d -> %d", devicesBefore, n)
				}
				if !e.HS.TokenValid(u.Token) {
					t.Fatal("the caller's token was revoked by the relay")
				}
				if n := e.HS.DeleteDevicesCalls(); n != 0 {
					t.Fatalf("delete_devices called %d times", n)
				}
			})
		})
	}
}

// TestRateLimit: requestToken floods get 429 M_LIMIT_EXCEEDED with Retry-After.
func TestRateLimit(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{RateLimitYAML: "{requesttoken_per_ip: {per_second: 0.01, burst: 100}, requesttoken_per_address: {per_second: 0.01, burst: 2}}"})
		for i := 1; i <= 2; i++ {
			e.RequestEmailToken(t, "sec", "flood@example.org", i)
		}
		r := e.Do("POST", "/_matrix/client/v3/account/3pid/email/requestToken", "", map[string]any{"client_secret": "sec", "email": "flood@example.org", "send_attempt": 3})
		harness.Expect(t, r, 429, "M_LIMIT_EXCEEDED")
		if s, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || s <= 0 {
			t.Fatalf("Retry-After = %q", r.Header.Get("Retry-After"))
		}
		e2 := harness.Start(t, b, harness.Options{RateLimitYAML: "{requesttoken_per_ip: {per_second: 0.01, burst: 2}}"})
		for i := 0; i < 2; i++ {
			e2.RequestEmailToken(t, "sec", "ip"+strconv.Itoa(i)+"@example.org", 1)
		}
		r = e2.Do("POST", "/_matrix/client/v3/account/3pid/email/requestToken", "", map[string]any{"client_secret": "sec", "email": "ip9@example.org", "send_attempt": 1})
		harness.Expect(t, r, 429, "M_LIMIT_EXCEEDED")
	})
}

// TestMediumNotSupported: a medium that is not configured.
func TestMediumNotSupported(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{NoMSISDN: true, NoEmail: true})
		r := e.Do("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", map[string]any{"client_secret": "x", "country": "GB", "phone_number": "07700900001", "send_attempt": 1})
		harness.Expect(t, r, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
		r = e.Do("POST", "/_matrix/client/v3/account/3pid/email/requestToken", "", map[string]any{"client_secret": "x", "email": "a@example.org", "send_attempt": 1})
		harness.Expect(t, r, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
	})
}

// TestCORSAndHealth: OPTIONS and CORS headers as the spec asks; /health.
func TestCORSAndHealth(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
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
