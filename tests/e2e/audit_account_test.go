package e2e

// A black-box audit of the client-server 3PID endpoints against the spec
// (administrative_contact.yaml and the requestToken definitions) and
// DESIGN.md's Decisions: hostile and edge-case input at every endpoint, under
// both /v3 and /r0. Every answer must be the documented status and errcode
// with a {"errcode", "error"} body, never a 5xx for a client's mistake, and a
// refused request must leave nothing behind (no message sent, no 3PID or
// binding written, nothing of another user's touched).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/threepid"
)

const (
	acctEmailSubmit  = "/_matrix/client/unstable/add_threepid/email/submit_token"
	acctMSISDNSubmit = "/_matrix/client/unstable/add_threepid/msisdn/submit_token"
)

// acctProbe is one request body and the answer it must get.
type acctProbe struct {
	name    string
	body    any // as harness.Do takes it: a string is sent as is
	status  int
	errcode string // "" for a 200
}

// acctExpect fails unless r has status and errcode; an error answer must be
// exactly a Matrix error body, {"errcode": "M_...", "error": "..."} plus at
// most the documented extras.
func acctExpect(t *testing.T, r harness.Response, status int, errcode string) {
	t.Helper()
	if r.Status != status || r.ErrCode() != errcode {
		t.Fatalf("got %d %q, want %d %q: %s", r.Status, r.ErrCode(), status, errcode, r.Body)
	}
	if status < 400 {
		return
	}
	var body map[string]any
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatalf("error body is not a JSON object: %s", r.Body)
	}
	if msg, ok := body["error"].(string); !ok || msg == "" {
		t.Fatalf("error body without an error text: %s", r.Body)
	}
	for k := range body {
		switch k {
		case "errcode", "error", "success", "retry_after_ms", "soft_logout":
		default:
			t.Fatalf("error body has an unexpected field %q: %s", k, r.Body)
		}
	}
}

// acctRun posts each acctProbe's body to path and checks the answer.
func acctRun(t *testing.T, e *harness.Env, path, token string, probes []acctProbe) {
	t.Helper()
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			acctExpect(t, e.Do("POST", path, token, p.body), p.status, p.errcode)
		})
	}
}

// acctListed returns u's 3PIDs as "medium:address" strings.
func acctListed(t *testing.T, e *harness.Env, u harness.User) []string {
	t.Helper()
	var out []string
	for _, x := range e.Threepids(t, u) {
		out = append(out, fmt.Sprintf("%v:%v", x["medium"], x["address"]))
	}
	return out
}

// acctExpectListed fails unless u holds exactly want ("medium:address").
func acctExpectListed(t *testing.T, e *harness.Env, u harness.User, want ...string) {
	t.Helper()
	if got := acctListed(t, e, u); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s holds %v, want %v", u.ID, got, want)
	}
}

// acctWith returns a copy of base with key set to v (or removed when v is
// the string "<absent>").
func acctWith(base map[string]any, key string, v any) map[string]any {
	out := make(map[string]any, len(base)+1)
	for k, x := range base {
		out[k] = x
	}
	if v == "<absent>" {
		delete(out, key)
	} else {
		out[key] = v
	}
	return out
}

// acctValue is a JSON value with a name for subtest names.
type acctValue struct {
	name  string
	value any
}

// acctBadStrings are values of the wrong JSON type for a string field.
var acctBadStrings = []acctValue{
	{"number", 5}, {"bool", true}, {"array", []any{"x"}}, {"object", map[string]any{"a": "b"}},
}

// acctBadInts are values an integer field refuses: wrong types, and numbers that
// are not JSON integers of 64 bits (Synapse: StrictInt).
var acctBadInts = []acctValue{
	{"bool", true}, {"array", []any{1}}, {"object", map[string]any{}}, {"quoted", "1"}, {"word", "one"},
	{"fraction", 1.5}, {"exponent", json.RawMessage("1e2")}, {"too big", json.RawMessage("99999999999999999999")},
}

// acctFieldProbes returns, for a required field of base: absent and null → 400
// M_MISSING_PARAM, each value of bad → 400 M_BAD_JSON.
func acctFieldProbes(base map[string]any, field string, bad []acctValue) []acctProbe {
	ps := []acctProbe{
		{field + " absent", acctWith(base, field, "<absent>"), 400, "M_MISSING_PARAM"},
		{field + " null", acctWith(base, field, nil), 400, "M_MISSING_PARAM"},
	}
	for _, v := range bad {
		ps = append(ps, acctProbe{field + " " + v.name, acctWith(base, field, v.value), 400, "M_BAD_JSON"})
	}
	return ps
}

// acctNonObjects are bodies that are not a JSON object: M_NOT_JSON when they
// are not JSON at all, M_BAD_JSON (as Synapse) when they are JSON of another type.
var acctNonObjects = []acctProbe{
	{"empty body", "", 400, "M_NOT_JSON"},
	{"not json", "client_secret=x", 400, "M_NOT_JSON"},
	{"truncated", `{"client_secret": "x"`, 400, "M_NOT_JSON"},
	{"trailing garbage", `{} {}`, 400, "M_NOT_JSON"},
	{"null", "null", 400, "M_BAD_JSON"},
	{"array", `[{}]`, 400, "M_BAD_JSON"},
	{"string", `"{}"`, 400, "M_BAD_JSON"},
	{"number", `42`, 400, "M_BAD_JSON"},
}

// acctBadSecrets are client_secret (or sid) values the spec's grammar
// [0-9a-zA-Z.=_-]{1,255} refuses: 400 M_INVALID_PARAM.
var acctBadSecrets = []struct{ name, value string }{
	{"empty", ""},
	{"space", "a b"},
	{"slash", "a/b"},
	{"plus", "a+b"},
	{"unicode", "sécret"},
	{"NUL", "a\x00b"},
	{"newline", "a\nb"},
	{"256 chars", strings.Repeat("a", 256)},
}

// TestAuditRequestToken: every field of both requestToken bodies, under v3 and
// r0. Refused requests send nothing.
func TestAuditRequestToken(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		emailBase := map[string]any{"client_secret": "audit", "email": "audit@example.org", "send_attempt": 1}
		msisdnBase := map[string]any{"client_secret": "audit", "country": "GB", "phone_number": "07700900123", "send_attempt": 1}
		common := func(base map[string]any) []acctProbe {
			ps := append([]acctProbe{}, acctNonObjects...)
			ps = append(ps, acctFieldProbes(base, "client_secret", acctBadStrings)...)
			ps = append(ps, acctFieldProbes(base, "send_attempt", acctBadInts)...)
			for _, s := range acctBadSecrets {
				ps = append(ps, acctProbe{"client_secret " + s.name, acctWith(base, "client_secret", s.value), 400, "M_INVALID_PARAM"})
			}
			for _, v := range []struct{ name, value string }{
				{"javascript", "javascript:alert(1)"},
				{"data", "data:text/html,<script>alert(1)</script>"},
				{"file", "file:///etc/passwd"},
				{"relative", "/done"},
				{"scheme-relative", "//evil.example/done"},
				{"no host", "https://"},
				{"not a URL", "http://a b"},
				{"too long", "https://app.example/" + strings.Repeat("a", 2100)},
			} {
				ps = append(ps, acctProbe{"next_link " + v.name, acctWith(base, "next_link", v.value), 400, "M_INVALID_PARAM"})
			}
			for _, bt := range acctBadStrings {
				ps = append(ps, acctProbe{"next_link " + bt.name, acctWith(base, "next_link", bt.value), 400, "M_BAD_JSON"})
			}
			return ps
		}
		emailProbes := append(common(emailBase), acctFieldProbes(emailBase, "email", acctBadStrings)...)
		for _, v := range []struct{ name, value string }{
			{"empty", ""}, {"blank", "   "}, {"no @", "audit.example.org"}, {"two @", "a@b@example.org"},
			{"only @", "@"}, {"too short", "a@"}, {"too long", strings.Repeat("a", 490) + "@example.org"},
		} {
			emailProbes = append(emailProbes, acctProbe{"email " + v.name, acctWith(emailBase, "email", v.value), 400, "M_INVALID_PARAM"})
		}
		msisdnProbes := append(common(msisdnBase), acctFieldProbes(msisdnBase, "country", acctBadStrings)...)
		msisdnProbes = append(msisdnProbes, acctFieldProbes(msisdnBase, "phone_number", acctBadStrings)...)
		for _, v := range []struct{ name, value string }{
			{"lower case", "gb"}, {"one letter", "G"}, {"three letters", "GBR"}, {"digits", "44"}, {"empty", ""}, {"unknown region", "ZZ"},
		} {
			msisdnProbes = append(msisdnProbes, acctProbe{"country " + v.name, acctWith(msisdnBase, "country", v.value), 400, "M_INVALID_PARAM"})
		}
		for _, v := range []struct{ name, value string }{
			{"empty", ""}, {"letters", "call me"}, {"plus only", "+"}, {"one digit", "7"}, {"huge", strings.Repeat("7", 300)},
		} {
			msisdnProbes = append(msisdnProbes, acctProbe{"phone_number " + v.name, acctWith(msisdnBase, "phone_number", v.value), 400, "M_INVALID_PARAM"})
		}
		for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
			t.Run(prefix, func(t *testing.T) {
				t.Run("email", func(t *testing.T) { acctRun(t, e, prefix+"/account/3pid/email/requestToken", "", emailProbes) })
				t.Run("msisdn", func(t *testing.T) { acctRun(t, e, prefix+"/account/3pid/msisdn/requestToken", "", msisdnProbes) })
			})
		}
		if n := len(e.SMTP.Mails()); n != 0 {
			t.Fatalf("refused requests sent %d mails", n)
		}
		if n := len(e.SMS.Messages()); n != 0 {
			t.Fatalf("refused requests sent %d SMS", n)
		}

		// The edges of what is accepted.
		allSecretChars := "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.=_-"
		t.Run("accepted", func(t *testing.T) {
			acctRun(t, e, "/_matrix/client/v3/account/3pid/email/requestToken", "", []acctProbe{
				{"255-char secret", acctWith(emailBase, "client_secret", strings.Repeat("s", 255)), 200, ""},
				{"every secret character", acctWith(emailBase, "client_secret", allSecretChars), 200, ""},
				{"send_attempt 0", acctWith(emailBase, "send_attempt", 0), 200, ""},
				{"send_attempt negative", acctWith(emailBase, "send_attempt", -1), 200, ""},
				{"send_attempt max int64", acctWith(emailBase, "send_attempt", json.RawMessage("9223372036854775807")), 200, ""},
				{"next_link upper-case scheme", acctWith(emailBase, "next_link", "HTTPS://App.example/done?x=1#y"), 200, ""},
				{"next_link null", acctWith(emailBase, "next_link", nil), 200, ""},
				{"next_link empty", acctWith(emailBase, "next_link", ""), 200, ""},
				{"unknown fields", acctWith(emailBase, "id_server", "id.example"), 200, ""},
			})
			acctRun(t, e, "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", []acctProbe{
				{"international number, other country", acctWith(acctWith(msisdnBase, "country", "US"), "phone_number", "+44 7700 900123"), 200, ""},
				{"punctuation", acctWith(msisdnBase, "phone_number", "(07700) 900-123"), 200, ""},
				{"Arabic-Indic digits", acctWith(msisdnBase, "phone_number", "٠٧٧٠٠٩٠٠١٢٣"), 200, ""},
			})
		})
	})
}

// TestAuditEmailAddresses: odd e-mail addresses. Synapse's canonical form
// (trimmed, local part case-folded, domain lower-cased) is what is validated;
// an address that is not a bare addr-spec mail can be sent to (a display
// name, spaces, an empty domain) is the client's mistake, 400
// M_INVALID_PARAM, never a 502 "try again later", and sends nothing.
func TestAuditEmailAddresses(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		const path = "/_matrix/client/v3/account/3pid/email/requestToken"
		for i, c := range []struct {
			name, email, mailedTo string // mailedTo "" when refused
		}{
			{"surrounding space", "  Trim@Example.ORG\t", "trim@example.org"},
			{"unicode", "Ünïcödé@Exämple.org", "ünïcödé@exämple.org"},
			{"sharp s folds", "Straße@example.org", "strasse@example.org"},
			{"shortest", "a@b", "a@b"},
			{"domain literal", "lit@[192.0.2.1]", "lit@[192.0.2.1]"},
			{"space inside", "a b@example.org", ""},
			{"CRLF inside", "a\r\nb@example.org", ""},
			{"display name", "Name <named@example.org>", ""},
			{"angle brackets", "<angle@example.org>", ""},
			{"comment", "a(comment)@example.org", ""},
			{"empty domain", "ab@", ""},
			{"double dot", "a..b@example.org", ""},
			{"header injection", "a\r\nBcc: evil@example.org", ""},
		} {
			t.Run(c.name, func(t *testing.T) {
				before := len(e.SMTP.Mails())
				r := e.Do("POST", path, "", map[string]any{"client_secret": "odd", "email": c.email, "send_attempt": i + 1})
				if c.mailedTo == "" {
					acctExpect(t, r, 400, "M_INVALID_PARAM")
					if n := len(e.SMTP.Mails()); n != before {
						t.Fatalf("a refused address got %d mails", n-before)
					}
					return
				}
				acctExpect(t, r, 200, "")
				e.SMTP.WaitMail(t, c.mailedTo, 10*time.Second)
			})
		}
	})
}

// acctSession is a validation session started through requestToken.
type acctSession struct {
	sid, secret, token string
}

// acctStartEmailSession requests a token for address and reads it from the mail.
func acctStartEmailSession(t *testing.T, e *harness.Env, secret, address string) acctSession {
	t.Helper()
	before := len(e.SMTP.Mails())
	sid := e.RequestEmailToken(t, secret, address, 1)
	var link string
	deadline := time.Now().Add(10 * time.Second)
	for link == "" && time.Now().Before(deadline) {
		for _, m := range e.SMTP.Mails()[before:] {
			if u, err := url.Parse(m.FirstLink()); err == nil && u.Query().Get("sid") == sid {
				link = m.FirstLink()
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	u, err := url.Parse(link)
	if err != nil || link == "" {
		t.Fatalf("no mail for session %s", sid)
	}
	return acctSession{sid: sid, secret: secret, token: u.Query().Get("token")}
}

// submit posts the session's sid and secret with token to the e-mail submit_token.
func (s acctSession) submit(t *testing.T, e *harness.Env, token string) harness.Response {
	t.Helper()
	return e.Do("POST", acctEmailSubmit, "", map[string]any{"sid": s.sid, "client_secret": s.secret, "token": token})
}

// acctExpectSuccessFalse fails unless an error body carries "success": false (the
// spec's v1.18 submitToken errors).
func acctExpectSuccessFalse(t *testing.T, r harness.Response) {
	t.Helper()
	if got, ok := r.JSON(t)["success"]; !ok || got != false {
		t.Fatalf("token error without \"success\": false: %s", r.Body)
	}
}

// TestAuditSubmitToken: the submit_token endpoints with bad bodies, unknown
// and foreign sessions, wrong, expired and reused tokens.
func TestAuditSubmitToken(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		u := e.NewUser("submitter")
		one := acctStartEmailSession(t, e, "secret-one", "submit@example.org")
		two := acctStartEmailSession(t, e, "secret-two", "submit@example.org")
		if one.sid == two.sid {
			t.Fatal("two client secrets share a session")
		}

		base := map[string]any{"sid": one.sid, "client_secret": one.secret, "token": "wrong"}
		probes := append([]acctProbe{}, acctNonObjects...)
		for _, f := range []string{"sid", "client_secret", "token"} {
			probes = append(probes, acctFieldProbes(base, f, acctBadStrings)...)
		}
		probes = append(probes,
			acctProbe{"unknown sid", acctWith(base, "sid", "nosuchsession"), 400, "M_INVALID_PARAM"},
			acctProbe{"empty sid", acctWith(base, "sid", ""), 400, "M_INVALID_PARAM"},
			acctProbe{"huge sid", acctWith(base, "sid", strings.Repeat("s", 10000)), 400, "M_INVALID_PARAM"},
			// The right token under another client's secret: the same answer as
			// an unknown sid, and no attempt counted.
			acctProbe{"secret of another session", map[string]any{"sid": one.sid, "client_secret": two.secret, "token": one.token}, 400, "M_INVALID_PARAM"},
			acctProbe{"empty secret", acctWith(base, "client_secret", ""), 400, "M_INVALID_PARAM"},
		)
		t.Run("email", func(t *testing.T) { acctRun(t, e, acctEmailSubmit, "", probes) })
		t.Run("e-mail session at the msisdn endpoint", func(t *testing.T) {
			r := e.Do("POST", acctMSISDNSubmit, "", map[string]any{"sid": one.sid, "client_secret": one.secret, "token": one.token})
			acctExpect(t, r, 400, "M_INVALID_PARAM")
		})
		t.Run("token of another session", func(t *testing.T) {
			r := one.submit(t, e, two.token)
			acctExpect(t, r, 400, "M_TOKEN_INCORRECT")
			acctExpectSuccessFalse(t, r)
		})
		t.Run("wrong secret does not use up attempts", func(t *testing.T) {
			for i := 0; i < 10; i++ {
				r := e.Do("POST", acctEmailSubmit, "", map[string]any{"sid": one.sid, "client_secret": "guess" + strconv.Itoa(i), "token": "x"})
				acctExpect(t, r, 400, "M_INVALID_PARAM")
			}
		})
		t.Run("right token, twice", func(t *testing.T) {
			for i := 0; i < 2; i++ {
				r := one.submit(t, e, " "+one.token+"\n")
				acctExpect(t, r, 200, "")
				if r.JSON(t)["success"] != true {
					t.Fatalf("answer %s", r.Body)
				}
			}
		})
		t.Run("expired token", func(t *testing.T) {
			s := acctStartEmailSession(t, e, "secret-expired", "expired@example.org")
			// Give the session a known token that expired a minute ago.
			past := time.Now().Add(-time.Minute).UnixMilli()
			if err := e.Server.Store.UpdateSessionToken(context.Background(), s.sid, threepid.HashToken("known-token"), 2, past); err != nil {
				t.Fatal(err)
			}
			r := s.submit(t, e, "known-token")
			acctExpect(t, r, 400, "M_SESSION_EXPIRED")
			acctExpectSuccessFalse(t, r)
			r = harness.Do(t, "GET", e.URL+acctEmailSubmit+"?"+url.Values{"sid": {s.sid}, "client_secret": {s.secret}, "token": {"known-token"}}.Encode(), "", nil)
			if r.Status != 400 || !strings.Contains(string(r.Body), "expired") {
				t.Fatalf("GET with an expired token: %d %s", r.Status, r.Body)
			}
			// Not validated: /add refuses it.
			acctExpect(t, e.AddThreepid(t, u, s.sid, s.secret), 400, "M_THREEPID_AUTH_FAILED")
		})
		t.Run("GET link", func(t *testing.T) {
			for _, q := range []url.Values{
				{},
				{"sid": {one.sid}},
				{"sid": {one.sid}, "client_secret": {one.secret}, "token": {"<script>alert(1)</script>"}},
				{"sid": {"<script>"}, "client_secret": {"<b>"}, "token": {"x"}},
			} {
				r := harness.Do(t, "GET", e.URL+acctEmailSubmit+"?"+q.Encode(), "", nil)
				if r.Status != 400 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") ||
					r.Header.Get("Content-Security-Policy") == "" || strings.Contains(string(r.Body), "<script>") || strings.Contains(string(r.Body), "<b>") {
					t.Fatalf("GET ?%s: %d %v %s", q.Encode(), r.Status, r.Header, r.Body)
				}
			}
		})
		t.Run("reused after add", func(t *testing.T) {
			acctExpect(t, e.AddThreepid(t, u, one.sid, one.secret), 200, "")
			acctExpect(t, one.submit(t, e, one.token), 400, "M_INVALID_PARAM")
			r := harness.Do(t, "GET", e.URL+acctEmailSubmit+"?"+url.Values{"sid": {one.sid}, "client_secret": {one.secret}, "token": {one.token}}.Encode(), "", nil)
			if r.Status != 400 {
				t.Fatalf("the link of a spent session: %d %s", r.Status, r.Body)
			}
			acctExpectListed(t, e, u, "email:submit@example.org")
		})
	})
}

// TestAuditAdd: /3pid/add with bad bodies (refused before user-interactive
// auth), and, after it, sessions that are unknown, foreign, unvalidated,
// spent, stale or for a 3PID someone holds. Nothing is written on a refusal.
func TestAuditAdd(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		alice, bob := e.NewUser("alice"), e.NewUser("bob")
		for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
			t.Run(prefix, func(t *testing.T) {
				base := map[string]any{"sid": "somesid", "client_secret": "somesecret"}
				probes := append([]acctProbe{}, acctNonObjects...)
				probes = append(probes, acctFieldProbes(base, "sid", acctBadStrings)...)
				probes = append(probes, acctFieldProbes(base, "client_secret", acctBadStrings)...)
				for _, s := range acctBadSecrets {
					probes = append(probes,
						acctProbe{"client_secret " + s.name, acctWith(base, "client_secret", s.value), 400, "M_INVALID_PARAM"},
						acctProbe{"sid " + s.name, acctWith(base, "sid", s.value), 400, "M_INVALID_PARAM"})
				}
				relays := len(e.HS.RelayCalls())
				acctRun(t, e, prefix+"/account/3pid/add", alice.Token, probes)
				if n := len(e.HS.RelayCalls()) - relays; n != 0 {
					t.Fatalf("bad bodies were relayed to the homeserver %d times", n)
				}
				acctExpect(t, e.Do("POST", prefix+"/account/3pid/add", "", base), 401, "M_MISSING_TOKEN")
			})
		}

		t.Run("unknown sid", func(t *testing.T) {
			acctExpect(t, e.AddThreepid(t, alice, "nosuchsession", "secret"), 400, "M_THREEPID_AUTH_FAILED")
		})
		t.Run("not validated", func(t *testing.T) {
			s := acctStartEmailSession(t, e, "unvalidated", "unvalidated@example.org")
			acctExpect(t, e.AddThreepid(t, alice, s.sid, s.secret), 400, "M_THREEPID_AUTH_FAILED")
		})
		t.Run("validated long ago", func(t *testing.T) {
			old := time.Now().Add(-25 * time.Hour).UnixMilli()
			err := e.Server.Store.CreateSession(context.Background(), storage.Session{
				SID: "stalesession", ClientSecret: "stale", Medium: "email", Address: "stale@example.org",
				TokenHash: threepid.HashToken("t"), SendAttempt: 1, ValidatedAt: old, ExpiresAt: old + 1, CreatedAt: old,
			})
			if err != nil {
				t.Fatal(err)
			}
			acctExpect(t, e.AddThreepid(t, alice, "stalesession", "stale"), 400, "M_THREEPID_AUTH_FAILED")
		})
		s := acctStartEmailSession(t, e, "alice-secret", "Shared@Example.org")
		acctExpect(t, s.submit(t, e, s.token), 200, "")
		bobs := acctStartEmailSession(t, e, "bob-secret", "shared@example.org")
		acctExpect(t, bobs.submit(t, e, bobs.token), 200, "")
		again := acctStartEmailSession(t, e, "alice-again", "shared@example.org")
		acctExpect(t, again.submit(t, e, again.token), 200, "")
		t.Run("another client's secret", func(t *testing.T) {
			acctExpect(t, e.AddThreepid(t, bob, s.sid, bobs.secret), 400, "M_THREEPID_AUTH_FAILED")
			acctExpect(t, e.AddThreepid(t, bob, s.sid, "nottheone"), 400, "M_THREEPID_AUTH_FAILED")
			acctExpectListed(t, e, bob)
		})
		t.Run("validated", func(t *testing.T) {
			acctExpect(t, e.AddThreepid(t, alice, s.sid, s.secret), 200, "")
			acctExpectListed(t, e, alice, "email:shared@example.org")
		})
		t.Run("twice", func(t *testing.T) {
			acctExpect(t, e.AddThreepid(t, alice, s.sid, s.secret), 400, "M_THREEPID_AUTH_FAILED")
			acctExpectListed(t, e, alice, "email:shared@example.org")
		})
		t.Run("already held, from a second session", func(t *testing.T) {
			// As Synapse's upsert: 200, and the 3PID is listed once.
			acctExpect(t, e.AddThreepid(t, alice, again.sid, again.secret), 200, "")
			acctExpectListed(t, e, alice, "email:shared@example.org")
			acctExpect(t, e.AddThreepid(t, alice, again.sid, again.secret), 400, "M_THREEPID_AUTH_FAILED")
		})
		t.Run("held by another user", func(t *testing.T) {
			acctExpect(t, e.AddThreepid(t, bob, bobs.sid, bobs.secret), 400, "M_THREEPID_IN_USE")
			acctExpectListed(t, e, bob)
			acctExpectListed(t, e, alice, "email:shared@example.org")
			r := e.Do("POST", "/_matrix/client/v3/account/3pid/email/requestToken", "", map[string]any{"client_secret": "late", "email": "SHARED@example.org", "send_attempt": 1})
			acctExpect(t, r, 400, "M_THREEPID_IN_USE")
		})
	})
}

// acctUnbindResult returns id_server_unbind_result of a 200 answer.
func acctUnbindResult(t *testing.T, r harness.Response) string {
	t.Helper()
	acctExpect(t, r, 200, "")
	got, _ := r.JSON(t)["id_server_unbind_result"].(string)
	return got
}

// TestAuditDeleteUnbind: /3pid/delete and /3pid/unbind with bad bodies, an
// untrusted id_server and another user's 3PID. Nothing changes on a refusal
// (checked through GET /account/3pid, the binding records and the identity
// server), and another user's 3PID answers exactly as one nobody holds.
func TestAuditDeleteUnbind(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		owner, other := e.NewUser("owner"), e.NewUser("other")
		e.AddEmail(t, owner, "kept@example.org")
		acctExpect(t, e.Bind(t, owner, 0, "email", "kept@example.org"), 200, "")
		unchanged := func(t *testing.T) {
			t.Helper()
			acctExpectListed(t, e, owner, "email:kept@example.org")
			if got := e.BindingsOf(t, owner, "kept@example.org"); len(got) != 1 {
				t.Fatalf("the owner's binding records: %v", got)
			}
			if e.IS[0].Bindings()["kept@example.org"] != owner.ID {
				t.Fatal("the identity server lost the owner's binding")
			}
		}
		base := map[string]any{"medium": "email", "address": "kept@example.org", "id_server": e.IS[0].Name()}
		probes := append([]acctProbe{}, acctNonObjects...)
		probes = append(probes, acctFieldProbes(base, "medium", acctBadStrings)...)
		probes = append(probes, acctFieldProbes(base, "address", acctBadStrings)...)
		for _, bt := range acctBadStrings {
			probes = append(probes, acctProbe{"id_server " + bt.name, acctWith(base, "id_server", bt.value), 400, "M_BAD_JSON"})
		}
		for _, v := range []acctValue{{"fax", "fax"}, {"upper case", "EMAIL"}, {"empty", ""}} {
			probes = append(probes, acctProbe{"medium " + v.name, acctWith(base, "medium", v.value), 400, "M_INVALID_PARAM"})
		}
		for _, v := range []acctValue{{"empty", ""}, {"no @", "kept.example.org"}, {"huge", strings.Repeat("k", 10000)}} {
			probes = append(probes, acctProbe{"address " + v.name, acctWith(base, "address", v.value), 400, "M_INVALID_PARAM"})
		}
		msisdn := acctWith(base, "medium", "msisdn")
		for _, v := range []acctValue{{"letters", "call me"}, {"e-mail", "kept@example.org"}, {"too long", strings.Repeat("4", 21)}, {"plus only", "+"}} {
			probes = append(probes, acctProbe{"msisdn " + v.name, acctWith(msisdn, "address", v.value), 400, "M_INVALID_PARAM"})
		}
		for _, v := range []acctValue{{"unconfigured", "evil.example"}, {"loopback", "127.0.0.1:1"}, {"case variant", strings.ToUpper(e.IS[0].Name())}, {"too long", strings.Repeat("a", 300)}} {
			code := "M_SERVER_NOT_TRUSTED"
			if v.name == "too long" {
				code = "M_INVALID_PARAM"
			}
			probes = append(probes, acctProbe{"id_server " + v.name, acctWith(base, "id_server", v.value), 400, code})
		}
		for _, ep := range []string{"delete", "unbind"} {
			for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
				t.Run(ep+prefix, func(t *testing.T) {
					calls := len(e.IS[0].UnbindCalls())
					acctRun(t, e, prefix+"/account/3pid/"+ep, owner.Token, probes)
					if n := len(e.IS[0].UnbindCalls()) - calls; n != 0 {
						t.Fatalf("refused requests sent %d unbinds", n)
					}
					unchanged(t)
				})
			}
		}
		t.Run("another user's 3PID", func(t *testing.T) {
			for _, ep := range []string{"delete", "unbind"} {
				calls := len(e.IS[0].UnbindCalls())
				for _, address := range []string{"kept@example.org", "KEPT@Example.org", "nobody@example.org"} {
					r := e.Do("POST", "/_matrix/client/v3/account/3pid/"+ep, other.Token, map[string]any{"medium": "email", "address": address})
					if got := acctUnbindResult(t, r); got != "no-support" {
						t.Fatalf("%s of %s by another user: %s", ep, address, got)
					}
				}
				if n := len(e.IS[0].UnbindCalls()) - calls; n != 0 {
					t.Fatalf("%s of another user's 3PID sent %d unbinds", ep, n)
				}
				unchanged(t)
			}
		})
		t.Run("no token", func(t *testing.T) {
			acctExpect(t, e.Do("POST", "/_matrix/client/v3/account/3pid/delete", "", base), 401, "M_MISSING_TOKEN")
			acctExpect(t, e.Do("POST", "/_matrix/client/v3/account/3pid/unbind", "bogus", base), 401, "M_UNKNOWN_TOKEN")
			unchanged(t)
		})
	})
}

// TestAuditBind: /3pid/bind and the deprecated POST /account/3pid with bad
// bodies and an untrusted id_server (nothing dialled), then every kind of
// identity-server failure: never a forwarded 401 or token errcode, nothing
// recorded.
func TestAuditBind(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		u := e.NewUser("binder")
		is := e.IS[0]
		base := map[string]any{"client_secret": "bind-secret", "id_server": is.Name(), "id_access_token": "idtoken", "sid": "bindsid"}
		probes := append([]acctProbe{}, acctNonObjects...)
		for _, f := range []string{"client_secret", "id_server", "id_access_token", "sid"} {
			probes = append(probes, acctFieldProbes(base, f, acctBadStrings)...)
		}
		for _, s := range acctBadSecrets {
			probes = append(probes,
				acctProbe{"client_secret " + s.name, acctWith(base, "client_secret", s.value), 400, "M_INVALID_PARAM"},
				acctProbe{"sid " + s.name, acctWith(base, "sid", s.value), 400, "M_INVALID_PARAM"})
		}
		probes = append(probes, acctProbe{"id_access_token huge", acctWith(base, "id_access_token", strings.Repeat("t", 5000)), 400, "M_INVALID_PARAM"})
		for _, v := range []string{"", "evil.example", "127.0.0.1:1", strings.ToUpper(is.Name()), is.Name() + ":443", is.URL()} {
			probes = append(probes, acctProbe{"id_server " + strconv.Quote(v), acctWith(base, "id_server", v), 400, "M_SERVER_NOT_TRUSTED"})
		}
		legacy := []acctProbe{
			{"three_pid_creds absent", map[string]any{"bind": true}, 400, "M_MISSING_PARAM"},
			{"three_pid_creds null", map[string]any{"three_pid_creds": nil}, 400, "M_MISSING_PARAM"},
			{"three_pid_creds string", map[string]any{"three_pid_creds": "x"}, 400, "M_BAD_JSON"},
			{"three_pid_creds array", map[string]any{"three_pid_creds": []any{base}}, 400, "M_BAD_JSON"},
			{"inner sid number", map[string]any{"three_pid_creds": acctWith(base, "sid", 5)}, 400, "M_BAD_JSON"},
			{"inner id_access_token null", map[string]any{"three_pid_creds": acctWith(base, "id_access_token", nil)}, 400, "M_MISSING_PARAM"},
			{"inner untrusted", map[string]any{"three_pid_creds": acctWith(base, "id_server", "evil.example")}, 400, "M_SERVER_NOT_TRUSTED"},
		}
		for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
			t.Run(prefix, func(t *testing.T) {
				acctRun(t, e, prefix+"/account/3pid/bind", u.Token, probes)
				acctRun(t, e, prefix+"/account/3pid", u.Token, legacy)
			})
		}
		if n := is.BindCalls() + is.ValidatedCalls(); n != 0 {
			t.Fatalf("refused binds reached the identity server %d times", n)
		}

		bind := func(t *testing.T, accessToken string, tamper func(sid, secret string) (string, string)) harness.Response {
			t.Helper()
			secret := "s-" + threepid.NewSID()[:8]
			sid := is.AddValidatedSession("email", "failing@example.org", secret, "good-token")
			sid, secret = tamper(sid, secret)
			return e.Do("POST", "/_matrix/client/v3/account/3pid/bind", u.Token, map[string]any{
				"client_secret": secret, "id_server": is.Name(), "id_access_token": accessToken, "sid": sid})
		}
		same := func(sid, secret string) (string, string) { return sid, secret }
		for _, c := range []struct {
			name        string
			mode        fakes.IdentityServerMode
			accessToken string
			tamper      func(sid, secret string) (string, string)
			status      int
			errcode     string
		}{
			{"wrong id_access_token", fakes.IdentityServerNormal, "bad-token", same, 403, "M_FORBIDDEN"},
			{"empty id_access_token", fakes.IdentityServerNormal, "", same, 403, "M_FORBIDDEN"},
			{"unknown session", fakes.IdentityServerNormal, "good-token", func(string, string) (string, string) { return "nosuchsid", "x" }, 404, "M_NO_VALID_SESSION"},
			{"wrong secret", fakes.IdentityServerNormal, "good-token", func(sid, _ string) (string, string) { return sid, "wrong" }, 404, "M_NO_VALID_SESSION"},
			{"401 M_UNKNOWN_TOKEN", fakes.IdentityServerUnauthorized401, "good-token", same, 403, "M_FORBIDDEN"},
			{"403", fakes.IdentityServerMatrixForbidden, "good-token", same, 403, "M_FORBIDDEN"},
			{"500", fakes.IdentityServerFail500, "good-token", same, 500, "M_UNKNOWN"},
			{"501 plain", fakes.IdentityServerFail501Plain, "good-token", same, 502, "M_UNKNOWN"},
			{"bad signature", fakes.IdentityServerBadSignature, "good-token", same, 502, "M_UNKNOWN"},
			{"wrong mxid", fakes.IdentityServerWrongMXID, "good-token", same, 502, "M_UNKNOWN"},
			{"timeout", fakes.IdentityServerHang, "good-token", same, 504, "M_UNKNOWN"},
		} {
			t.Run(c.name, func(t *testing.T) {
				is.SetMode(c.mode)
				defer is.SetMode(fakes.IdentityServerNormal)
				acctExpect(t, bind(t, c.accessToken, c.tamper), c.status, c.errcode)
				if got := e.BindingsOf(t, u, "failing@example.org"); len(got) != 0 {
					t.Fatalf("recorded %v", got)
				}
			})
		}
		t.Run("unreachable", func(t *testing.T) {
			is.Stop()
			defer is.Start()
			acctExpect(t, bind(t, "good-token", same), 502, "M_UNKNOWN")
			if got := e.BindingsOf(t, u, "failing@example.org"); len(got) != 0 {
				t.Fatalf("recorded %v", got)
			}
		})
		// An identity server that answers the address as the user typed it:
		// the binding is recorded under the canonical address, so that unbind
		// and delete (which canonicalise) find it.
		t.Run("non-canonical address from the identity server", func(t *testing.T) {
			acctExpect(t, e.Bind(t, u, 0, "email", "Mixed.Case@Example.ORG"), 200, "")
			if got := e.BindingsOf(t, u, "mixed.case@example.org"); len(got) != 1 {
				t.Fatalf("binding records of the canonical address: %v", got)
			}
			calls := len(is.UnbindCalls())
			r := e.Do("POST", "/_matrix/client/v3/account/3pid/unbind", u.Token, map[string]any{"medium": "email", "address": "mixed.case@example.org"})
			if got := acctUnbindResult(t, r); got != "success" || len(is.UnbindCalls()) != calls+1 {
				t.Fatalf("unbind: %s after %d calls", got, len(is.UnbindCalls())-calls)
			}
		})
	})
}

// acctRoute is a method and a path.
type acctRoute struct{ method, path string }

// acctRoutes returns every 3PID endpoint under both client prefixes, and the
// submit_token endpoints.
func acctRoutes() []acctRoute {
	var out []acctRoute
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
		for _, ep := range []acctRoute{
			{"GET", "/account/3pid"},
			{"POST", "/account/3pid"},
			{"POST", "/account/3pid/email/requestToken"},
			{"POST", "/account/3pid/msisdn/requestToken"},
			{"POST", "/account/3pid/add"},
			{"POST", "/account/3pid/bind"},
			{"POST", "/account/3pid/unbind"},
			{"POST", "/account/3pid/delete"},
		} {
			out = append(out, acctRoute{ep.method, prefix + ep.path})
		}
	}
	for _, p := range []string{acctEmailSubmit, acctMSISDNSubmit} {
		out = append(out, acctRoute{"GET", p}, acctRoute{"POST", p})
	}
	return out
}

// acctExpectCORS fails unless r carries the CORS headers the spec asks for.
func acctExpectCORS(t *testing.T, r harness.Response) {
	t.Helper()
	h := r.Header
	if h.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Content-Type") {
		t.Fatalf("CORS headers missing: %v", h)
	}
}

// acctChunkedPost posts n bytes with chunked transfer encoding (no
// Content-Length) and returns the answer.
func acctChunkedPost(t *testing.T, url, token string, n int) harness.Response {
	t.Helper()
	body := strings.NewReader(`{"pad":"` + strings.Repeat("a", n) + `"}`)
	req, err := http.NewRequest("POST", url, struct{ io.Reader }{body})
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	harness.CheckResponse(t, req.Method, req.URL.EscapedPath(), resp.StatusCode, data)
	return harness.Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// TestAuditHTTP: OPTIONS and CORS on every endpoint, 404 and 405 as Matrix
// errors, and the 64 KiB body limit, with and without Content-Length.
func TestAuditHTTP(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		u := e.NewUser("http")
		for _, ep := range acctRoutes() {
			t.Run(ep.method+ep.path, func(t *testing.T) {
				r := e.Do("OPTIONS", ep.path, "", nil)
				acctExpect(t, r, 200, "")
				acctExpectCORS(t, r)
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
				acctExpect(t, r, 413, "M_TOO_LARGE")
				acctExpectCORS(t, r)
				r = acctChunkedPost(t, e.URL+ep.path, u.Token, 1<<20)
				acctExpect(t, r, 413, "M_TOO_LARGE")
			})
		}
		for _, c := range []acctRoute{
			{"PUT", "/_matrix/client/v3/account/3pid"},
			{"DELETE", "/_matrix/client/r0/account/3pid"},
			{"GET", "/_matrix/client/v3/account/3pid/add"},
			{"GET", "/_matrix/client/v3/account/3pid/delete"},
			{"GET", "/_matrix/client/r0/account/3pid/bind"},
			{"GET", "/_matrix/client/v3/account/3pid/unbind"},
			{"GET", "/_matrix/client/v3/account/3pid/email/requestToken"},
			{"PUT", "/_matrix/client/v3/account/3pid/msisdn/requestToken"},
			{"DELETE", acctEmailSubmit},
		} {
			t.Run("405 "+c.method+c.path, func(t *testing.T) {
				r := e.Do(c.method, c.path, u.Token, nil)
				acctExpect(t, r, 405, "M_UNRECOGNIZED")
				acctExpectCORS(t, r)
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
				acctExpect(t, r, 404, "M_UNRECOGNIZED")
				acctExpectCORS(t, r)
			})
		}
	})
}

// TestAuditRateLimit: requestToken over either limit answers 429
// M_LIMIT_EXCEEDED with Retry-After (whole seconds) and retry_after_ms that
// agree, sends nothing, and counts an address in its canonical form.
func TestAuditRateLimit(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{RateLimitYAML: "{requesttoken_per_ip: {per_second: 0.01, burst: 4}, requesttoken_per_address: {per_second: 0.01, burst: 2}}"})
		const path = "/_matrix/client/v3/account/3pid/email/requestToken"
		limited := func(t *testing.T, r harness.Response) {
			t.Helper()
			acctExpect(t, r, 429, "M_LIMIT_EXCEEDED")
			secs, err := strconv.Atoi(r.Header.Get("Retry-After"))
			ms, _ := r.JSON(t)["retry_after_ms"].(float64)
			if err != nil || secs <= 0 || ms <= 0 || float64(secs) < ms/1000 || float64(secs) > ms/1000+1 {
				t.Fatalf("Retry-After %q and retry_after_ms %v disagree", r.Header.Get("Retry-After"), ms)
			}
			acctExpectCORS(t, r)
		}
		// Per address, whatever the spelling.
		for i, spelling := range []string{"flood@example.org", "FLOOD@Example.org"} {
			acctExpect(t, e.Do("POST", path, "", map[string]any{"client_secret": "s", "email": spelling, "send_attempt": i + 1}), 200, "")
		}
		mails := len(e.SMTP.Mails())
		limited(t, e.Do("POST", path, "", map[string]any{"client_secret": "s", "email": " Flood@EXAMPLE.org", "send_attempt": 3}))
		// Per IP, across addresses and both media.
		acctExpect(t, e.Do("POST", path, "", map[string]any{"client_secret": "s", "email": "other@example.org", "send_attempt": 1}), 200, "")
		limited(t, e.Do("POST", "/_matrix/client/r0/account/3pid/msisdn/requestToken", "", map[string]any{"client_secret": "s", "country": "GB", "phone_number": "07700900999", "send_attempt": 1}))
		time.Sleep(100 * time.Millisecond)
		if n := len(e.SMTP.Mails()) - mails; n != 1 {
			t.Fatalf("%d mails after the limit, want 1 (other@)", n)
		}
		if n := len(e.SMS.Messages()); n != 0 {
			t.Fatalf("a limited request sent %d SMS", n)
		}
	})
}

// TestAuditUnbindAnswers: how /3pid/unbind and /3pid/delete report each kind
// of identity-server answer (DESIGN.md, "Identity-server answers"): an
// identity server's 401 never reaches the client as a 401; transient failures
// keep the record and answer no-support; delete always removes the 3PID.
func TestAuditUnbindAnswers(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		is := e.IS[0]
		for i, c := range []struct {
			name       string
			mode       fakes.IdentityServerMode
			down       bool
			unbind     string // result of /unbind, or an errcode
			status     int    // status of /unbind
			keptRecord bool   // after /unbind
		}{
			{"success", fakes.IdentityServerNormal, false, "success", 200, false},
			{"401 M_UNKNOWN_TOKEN", fakes.IdentityServerUnauthorized401, false, "M_FORBIDDEN", 403, true},
			{"403", fakes.IdentityServerMatrixForbidden, false, "M_FORBIDDEN", 403, true},
			{"501 plain", fakes.IdentityServerFail501Plain, false, "no-support", 200, false},
			{"500", fakes.IdentityServerFail500, false, "no-support", 200, true},
			{"refused", fakes.IdentityServerNormal, true, "no-support", 200, true},
		} {
			t.Run(c.name, func(t *testing.T) {
				u := e.NewUser("unbinder" + strconv.Itoa(i))
				address := "unbind" + strconv.Itoa(i) + "@example.org"
				e.AddEmail(t, u, address)
				acctExpect(t, e.Bind(t, u, 0, "email", address), 200, "")
				is.SetMode(c.mode)
				if c.down {
					is.Stop()
				}
				defer func() {
					is.SetMode(fakes.IdentityServerNormal)
					if c.down {
						is.Start()
					}
				}()
				r := e.Do("POST", "/_matrix/client/v3/account/3pid/unbind", u.Token, map[string]any{"medium": "email", "address": address})
				if c.status == 200 {
					if got := acctUnbindResult(t, r); got != c.unbind {
						t.Fatalf("/unbind: %s, want %s", got, c.unbind)
					}
				} else {
					acctExpect(t, r, c.status, c.unbind)
				}
				if kept := len(e.BindingsOf(t, u, address)) == 1; kept != c.keptRecord {
					t.Fatalf("after /unbind the record kept = %t, want %t", kept, c.keptRecord)
				}
				r = e.Do("POST", "/_matrix/client/v3/account/3pid/delete", u.Token, map[string]any{"medium": "email", "address": address, "id_server": is.Name()})
				want := "no-support"
				if c.mode == fakes.IdentityServerNormal && !c.down {
					want = "success"
				}
				if got := acctUnbindResult(t, r); got != want {
					t.Fatalf("/delete: %s, want %s", got, want)
				}
				acctExpectListed(t, e, u)
			})
		}
	})
}
