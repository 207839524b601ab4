package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/events"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
)

// expectBlocked checks a 403 with errcode whose text names the rule and reason.
func expectBlocked(t *testing.T, r harness.Response, errcode, rule, reason string) {
	t.Helper()
	harness.Expect(t, r, 403, errcode)
	msg, _ := r.JSON(t)["error"].(string)
	if !strings.Contains(msg, rule) || !strings.Contains(msg, reason) {
		t.Fatalf("error %q does not name rule %s and reason %q", msg, rule, reason)
	}
}

var policyKeys = []string{"callback", "op", "user_id", "medium", "address", "id_server"}

// allowEverything answers the policy webhook {"allow": true}.
func allowEverything(w http.ResponseWriter, _ *http.Request, _ []byte) int {
	return reply(w, 200, `{"allow": true}`)
}

// denyWhen answers the policy webhook: refuses the changes refuse matches,
// with a reason naming the op.
func denyWhen(refuse func(policy.Change) bool) func(http.ResponseWriter, *http.Request, []byte) int {
	return func(w http.ResponseWriter, _ *http.Request, body []byte) int {
		var c policy.Change
		_ = json.Unmarshal(body, &c)
		if refuse(c) {
			return reply(w, 200, fmt.Sprintf(`{"allow": false, "reason": "the policy refuses %s"}`, c.Op))
		}
		return reply(w, 200, `{"allow": true}`)
	}
}

// policyState is what a probe may change: 3PIDs and bindings threepidd
// holds for the user, calls and bindings at the identity server, messages sent.
type policyState struct {
	Threepids, Bindings, ISBindCalls, ISUnbindCalls, ISBound, Messages int
}

func stateOf(t *testing.T, e *harness.Env, u harness.User, address string) policyState {
	t.Helper()
	is := e.IS[0]
	bound := 0
	if is.Bindings()[address] == u.ID {
		bound = 1
	}
	return policyState{
		Threepids: len(e.Threepids(t, u)), Bindings: len(e.BindingsOf(t, u, address)),
		ISBindCalls: is.BindCalls(), ISUnbindCalls: len(is.UnbindCalls()), ISBound: bound,
		Messages: len(e.SMTP.Mails()) + len(e.SMS.Messages()),
	}
}

// TestPolicyBlocksRequestToken: the built-in address rules block at
// requestToken (no user yet) and nothing is sent.
func TestPolicyBlocksRequestToken(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{ExtraYAML: "policy: {email_domains_allowed: [example.org, spam.example], email_domains_denied: [spam.example], msisdn_countries_denied: [\"33\"]}\n"})
		for _, tc := range []struct{ email, rule, reason string }{
			{"eve@spam.example", "email_domains_denied", "e-mail addresses at spam.example are not allowed"},
			{"eve@mx.SPAM.example", "email_domains_denied", "e-mail addresses at mx.spam.example are not allowed"},
			{"eve@gmail.com", "email_domains_allowed", "only e-mail addresses at example.org, spam.example are allowed"},
		} {
			r := e.Do("POST", requestTokenPath, "", map[string]any{"client_secret": "sec", "email": tc.email, "send_attempt": 1})
			expectBlocked(t, r, "M_THREEPID_DENIED", tc.rule, tc.reason)
		}
		r := e.Do("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", map[string]any{
			"client_secret": "sec", "country": "FR", "phone_number": "06 12 34 56 78", "send_attempt": 1})
		expectBlocked(t, r, "M_THREEPID_DENIED", "msisdn_countries_denied", "calling code +33")
		if n, m := len(e.SMTP.Mails()), len(e.SMS.Messages()); n+m != 0 {
			t.Fatalf("blocked requests sent %d mails and %d SMS", n, m)
		}
		// Subdomains of an allowed domain pass; so do other countries.
		e.RequestEmailToken(t, "sec", "ann@lists.example.org", 1)
		harness.Expect(t, e.Do("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", map[string]any{
			"client_secret": "sec", "country": "GB", "phone_number": "07700 900002", "send_attempt": 1}), 200, "")
	})
}

// TestPolicyBlocksAdd: a webhook that lets requestToken through (user_id "")
// but refuses the user at /add: 403 M_THREEPID_DENIED, nothing stored; and
// max_threepids_per_user.
func TestPolicyBlocksAdd(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		h := newHook(t, func(_ context.Context, ev events.Event) (int, string) {
			if ev.UserID == "@mallory:hs.test" {
				return 200, `{"allow": false, "reason": "mallory may not add 3PIDs"}`
			}
			return 200, `{"allow": true}`
		})
		e := harness.Start(t, b, harness.Options{ExtraYAML: policyYAML(h, hookSecret, "", ", max_threepids_per_user: 1")})
		mallory, alice := e.NewUser("mallory"), e.NewUser("alice")
		sid := e.ValidateEmail(t, "sec-m", "mallory@example.org")
		expectBlocked(t, e.AddThreepid(t, mallory, sid, "sec-m"), "M_THREEPID_DENIED", "webhook", "mallory may not add 3PIDs")
		if list := e.Threepids(t, mallory); len(list) != 0 {
			t.Fatalf("blocked add stored %v", list)
		}
		var asked []string
		for _, c := range h.calls() {
			asked = append(asked, fmt.Sprintf("%s %s %q %s", c.Event.Callback, c.Event.Op, c.Event.UserID, c.Event.Address))
		}
		if want := []string{`user_threepid add "" mallory@example.org`, `user_threepid add "@mallory:hs.test" mallory@example.org`}; !slices.Equal(asked, want) {
			t.Fatalf("webhook asked %q, want %q", asked, want)
		}

		e.AddEmail(t, alice, "alice@example.org")
		sid = e.ValidateEmail(t, "sec-a", "alice2@example.org")
		expectBlocked(t, e.AddThreepid(t, alice, sid, "sec-a"), "M_THREEPID_DENIED", "max_threepids_per_user", "at most 1")
		if list := e.Threepids(t, alice); len(list) != 1 || list[0]["address"] != "alice@example.org" {
			t.Fatalf("threepids after the limit: %v", list)
		}
	})
}

// TestPolicyBlocksBind: binds on an identity server outside
// bind_identity_servers_allowed, or of an address the rules refuse, are 403
// M_FORBIDDEN and the identity server's bind endpoint is never called.
func TestPolicyBlocksBind(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 2,
			ExtraYAML: "policy: {bind_identity_servers_allowed: [id1.test], email_domains_denied: [spam.example]}\n"})
		u := e.NewUser("binder")
		expectBlocked(t, e.Bind(t, u, 1, "email", "binder@example.org"), "M_FORBIDDEN", "bind_identity_servers_allowed", "may not be bound on id2.test")
		expectBlocked(t, e.Bind(t, u, 0, "email", "binder@spam.example"), "M_FORBIDDEN", "email_domains_denied", "spam.example")
		for i, is := range e.IS {
			if n, bs := is.BindCalls(), is.Bindings(); n != 0 || len(bs) != 0 {
				t.Fatalf("identity server %d got %d bind calls, holds %v", i, n, bs)
			}
		}
		if got := e.BindingsOf(t, u, "binder@example.org"); len(got) != 0 {
			t.Fatalf("blocked bind recorded %v", got)
		}
		harness.Expect(t, e.Bind(t, u, 0, "email", "binder@example.org"), 200, "")
		if got := e.IS[0].Bindings()["binder@example.org"]; got != u.ID {
			t.Fatalf("allowed bind: IS holds %q", got)
		}
	})
}

// TestPolicyWebhookBlocks: every block of issue 7 point 2, made by a policy
// webhook that refuses one kind of change: the answer, the error text naming
// the rule and the webhook's reason, what is stored, what the identity server
// saw, and the exact signed body the webhook was asked with. A refused removal
// is 403 M_FORBIDDEN and keeps the 3PID and its binding, with no identity
// server called; a refused unbind answers no-support and keeps the binding
// (ours and the identity server's); a delete whose unbind is refused still
// removes the 3PID from the account and answers no-support.
func TestPolicyWebhookBlocks(t *testing.T) {
	const address = "blockee@example.org"
	const user = "@blockee:hs.test"
	op := func(op policy.Op, anonymous bool) func(policy.Change) bool {
		return func(c policy.Change) bool { return c.Op == op && (c.UserID == "") == anonymous }
	}
	tests := []struct {
		name string
		// added, bound: the 3PID is added (and bound on id1) before the probe.
		added, bound bool
		refuse       func(policy.Change) bool
		do           func(t *testing.T, e *harness.Env, u harness.User) harness.Response
		status       int
		errcode      string // "" for 200 with unbindResult
		unbindResult string
		// change: how the state differs from before the probe.
		change  func(s *policyState)
		lastAsk policy.Change
	}{
		{name: "email requestToken", refuse: op(policy.OpAdd, true),
			do: func(t *testing.T, e *harness.Env, _ harness.User) harness.Response {
				return e.Do("POST", requestTokenPath, "", map[string]any{"client_secret": "sec", "email": "Blockee@EXAMPLE.org", "send_attempt": 1})
			},
			status: 403, errcode: "M_THREEPID_DENIED", change: func(*policyState) {},
			lastAsk: policy.Change{Callback: "user_threepid", Op: "add", Medium: "email", Address: address}},
		{name: "msisdn requestToken", refuse: op(policy.OpAdd, true),
			do: func(t *testing.T, e *harness.Env, _ harness.User) harness.Response {
				return e.Do("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", map[string]any{
					"client_secret": "sec", "country": "GB", "phone_number": "07700 900123", "send_attempt": 1})
			},
			status: 403, errcode: "M_THREEPID_DENIED", change: func(*policyState) {},
			lastAsk: policy.Change{Callback: "user_threepid", Op: "add", Medium: "msisdn", Address: "447700900123"}},
		{name: "add", refuse: op(policy.OpAdd, false),
			do: func(t *testing.T, e *harness.Env, u harness.User) harness.Response {
				sid := e.ValidateEmail(t, "sec-add", address)
				return e.AddThreepid(t, u, sid, "sec-add")
			},
			status: 403, errcode: "M_THREEPID_DENIED", change: func(s *policyState) { s.Messages++ },
			lastAsk: policy.Change{Callback: "user_threepid", Op: "add", UserID: user, Medium: "email", Address: address}},
		{name: "delete", added: true, bound: true, refuse: op(policy.OpRemove, false),
			do: func(t *testing.T, e *harness.Env, u harness.User) harness.Response {
				return e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": "BLOCKEE@example.org"})
			},
			status: 403, errcode: "M_FORBIDDEN", change: func(*policyState) {},
			lastAsk: policy.Change{Callback: "user_threepid", Op: "remove", UserID: user, Medium: "email", Address: address}},
		{name: "bind", added: true, refuse: op(policy.OpBind, false),
			do: func(t *testing.T, e *harness.Env, u harness.User) harness.Response {
				return e.Bind(t, u, 0, "email", address)
			},
			status: 403, errcode: "M_FORBIDDEN", change: func(*policyState) {},
			lastAsk: policy.Change{Callback: "identity_server_binding", Op: "bind", UserID: user, Medium: "email", Address: address, IDServer: "id1.test"}},
		{name: "unbind naming the identity server", added: true, bound: true, refuse: op(policy.OpUnbind, false),
			do: func(t *testing.T, e *harness.Env, u harness.User) harness.Response {
				return e.Do("POST", unbindPath, u.Token, map[string]any{"medium": "email", "address": address, "id_server": "id1.test"})
			},
			status: 200, unbindResult: "no-support", change: func(*policyState) {},
			lastAsk: policy.Change{Callback: "identity_server_binding", Op: "unbind", UserID: user, Medium: "email", Address: address, IDServer: "id1.test"}},
		{name: "unbind of the recorded bindings", added: true, bound: true, refuse: op(policy.OpUnbind, false),
			do: func(t *testing.T, e *harness.Env, u harness.User) harness.Response {
				return e.Do("POST", unbindPath, u.Token, map[string]any{"medium": "email", "address": address})
			},
			status: 200, unbindResult: "no-support", change: func(*policyState) {},
			lastAsk: policy.Change{Callback: "identity_server_binding", Op: "unbind", UserID: user, Medium: "email", Address: address, IDServer: "id1.test"}},
		{name: "delete whose unbind is blocked", added: true, bound: true, refuse: op(policy.OpUnbind, false),
			do: func(t *testing.T, e *harness.Env, u harness.User) harness.Response {
				return e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": address})
			},
			status: 200, unbindResult: "no-support", change: func(s *policyState) { s.Threepids-- },
			lastAsk: policy.Change{Callback: "identity_server_binding", Op: "unbind", UserID: user, Medium: "email", Address: address, IDServer: "id1.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			harness.Run(t, func(t *testing.T, b storagetest.Backend) {
				h := newRawHook(t, allowEverything)
				e := harness.Start(t, b, harness.Options{IdentityServers: 1, ExtraYAML: fmt.Sprintf(
					"policy: {webhook: {url: %q, secret: %q}}\n", h.srv.URL, hookSecret)})
				u := e.NewUser("blockee")
				if tt.added {
					e.AddEmail(t, u, address)
				}
				if tt.bound {
					harness.Expect(t, e.Bind(t, u, 0, "email", address), 200, "")
				}
				h.set(denyWhen(tt.refuse))
				want := stateOf(t, e, u, address)
				tt.change(&want)
				r := tt.do(t, e, u)
				if tt.errcode != "" {
					expectBlocked(t, r, tt.errcode, "rule webhook", "the policy refuses "+string(tt.lastAsk.Op))
				} else if got := unbindResult(t, r); got != tt.unbindResult {
					t.Fatalf("id_server_unbind_result %q, want %q", got, tt.unbindResult)
				}
				if got := stateOf(t, e, u, address); got != want {
					t.Fatalf("state after the block %+v, want %+v", got, want)
				}
				calls := h.received()
				for _, c := range calls {
					if !c.Verified {
						t.Fatalf("a webhook request failed the receiver's signature check: %s", c.Body)
					}
					checkKeys(t, c.Body, policyKeys...)
				}
				var last policy.Change
				_ = json.Unmarshal(calls[len(calls)-1].Body, &last)
				if last != tt.lastAsk {
					t.Fatalf("last webhook question %+v, want %+v", last, tt.lastAsk)
				}
			})
		})
	}
}

// TestPolicyWebhook: the webhook as a real receiver sees it: allow, deny, a
// timeout (fail closed and fail open), and requests signed with another
// secret, which the receiver's VerifySignature refuses.
func TestPolicyWebhook(t *testing.T) {
	hang := func(ctx context.Context, _ events.Event) (int, string) {
		<-ctx.Done() // until threepidd gives up
		return 200, `{"allow": true}`
	}
	tests := []struct {
		name     string
		answer   func(context.Context, events.Event) (int, string)
		yamlOpts string
		secret   string
		// wantRule "" means allowed.
		wantRule, wantReason string
		wantVerified         int
	}{
		{"allow", allowAll, "", hookSecret, "", "", 1},
		{"deny", deny(policy.OpAdd), "", hookSecret, "webhook", "no add today", 1},
		{"timeout fails closed", hang, ", timeout: 300ms", hookSecret, "webhook", "did not answer within 300ms", 1},
		{"timeout, fail open", hang, ", timeout: 300ms, fail_open: true", hookSecret, "", "", 1},
		{"bad signature", allowAll, "", "not-the-secret", "webhook", "answered HTTP 401", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			harness.Run(t, func(t *testing.T, b storagetest.Backend) {
				h := newHook(t, tt.answer)
				e := harness.Start(t, b, harness.Options{ExtraYAML: policyYAML(h, tt.secret, tt.yamlOpts, "")})
				start := time.Now()
				r := e.Do("POST", requestTokenPath, "", map[string]any{"client_secret": "sec", "email": "ann@Example.ORG", "send_attempt": 1})
				if tt.wantRule == "" {
					harness.Expect(t, r, 200, "")
					e.SMTP.WaitMail(t, "ann@example.org", 10*time.Second)
				} else {
					expectBlocked(t, r, "M_THREEPID_DENIED", tt.wantRule, tt.wantReason)
				}
				if elapsed := time.Since(start); elapsed > 5*time.Second {
					t.Fatalf("requestToken took %s", elapsed)
				}
				// A hanging request is recorded once threepidd has dropped it.
				support.WaitFor(t, "the webhook call", func() bool { return len(h.calls())+h.refusedCount() == 1 }, 10*time.Second)
				calls := h.calls()
				if len(calls) != tt.wantVerified || h.refusedCount() != 1-tt.wantVerified {
					t.Fatalf("receiver verified %d requests and refused %d", len(calls), h.refusedCount())
				}
				want := policy.Change{Callback: "user_threepid", Op: "add", Medium: "email", Address: "ann@example.org"}
				if len(calls) == 1 && (calls[0].Event.Change != want || calls[0].Event.ID != "") {
					t.Fatalf("receiver got %+v, want %+v", calls[0].Event, want)
				}
			})
		})
	}
}

// TestPolicyWebhookAnswers: policy webhook answers that are not a
// usable {"allow": bool} block the change, or let it through with
// fail_open, promptly and never as a 500.
func TestPolicyWebhookAnswers(t *testing.T) {
	plain := func(status int, body string) func(http.ResponseWriter, *http.Request, []byte) int {
		return func(w http.ResponseWriter, _ *http.Request, _ []byte) int { return reply(w, status, body) }
	}
	redirect := func(status int) func(http.ResponseWriter, *http.Request, []byte) int {
		return func(w http.ResponseWriter, r *http.Request, _ []byte) int {
			if r.URL.Path == "/moved" {
				return reply(w, 200, `{"allow": true}`) // whatever was asked, with any method
			}
			w.Header().Set("Location", "/moved")
			w.WriteHeader(status)
			return status
		}
	}
	tests := []struct {
		name   string
		serve  func(http.ResponseWriter, *http.Request, []byte) int
		reason string
	}{
		{"not JSON", plain(200, `allow`), `answer is not {"allow": true|false}`},
		{"trailing garbage", plain(200, `{"allow": true} x`), `answer is not {"allow": true|false}`},
		{"allow missing", plain(200, `{"reason": "fine"}`), `answer is not {"allow": true|false}`},
		{"allow null", plain(200, `{"allow": null}`), `answer is not {"allow": true|false}`},
		{"allow a string", plain(200, `{"allow": "true"}`), `answer is not {"allow": true|false}`},
		{"allow a number", plain(200, `{"allow": 1}`), `answer is not {"allow": true|false}`},
		{"an array", plain(200, `[{"allow": true}]`), `answer is not {"allow": true|false}`},
		{"500 saying allow", plain(500, `{"allow": true}`), "answered HTTP 500"},
		{"404", plain(404, `{"allow": true}`), "answered HTTP 404"},
		{"302 to an allowing page", redirect(302), "answered HTTP 302"},
		{"307 to an allowing page", redirect(307), "answered HTTP 307"},
		{"huge body", func(w http.ResponseWriter, _ *http.Request, _ []byte) int {
			return reply(w, 200, `{"allow": true, "reason": "`+strings.Repeat("x", 1<<20)+`"}`)
		}, "answer is too large"},
		{"slow beyond the timeout", func(w http.ResponseWriter, r *http.Request, _ []byte) int {
			select {
			case <-r.Context().Done():
			case <-time.After(3 * time.Second):
			}
			return reply(w, 200, `{"allow": true}`)
		}, "did not answer within 300ms"},
		{"headers then a slow body", func(w http.ResponseWriter, r *http.Request, _ []byte) int {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(200)
			_, _ = io.WriteString(w, `{"allow":`)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(3 * time.Second):
			}
			_, _ = io.WriteString(w, ` true}`)
			return 200
		}, "did not answer within 300ms"},
	}
	for _, tt := range tests {
		for _, failOpen := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/fail_open=%t", tt.name, failOpen), func(t *testing.T) {
				harness.Run(t, func(t *testing.T, b storagetest.Backend) {
					h := newRawHook(t, tt.serve)
					e := harness.Start(t, b, harness.Options{ExtraYAML: fmt.Sprintf(
						"policy: {webhook: {url: %q, secret: %q, timeout: 300ms, fail_open: %t}}\n", h.srv.URL+"/check", hookSecret, failOpen)})
					start := time.Now()
					r := e.Do("POST", requestTokenPath, "", map[string]any{"client_secret": "sec", "email": "ann@example.org", "send_attempt": 1})
					if elapsed := time.Since(start); elapsed > 2*time.Second {
						t.Fatalf("requestToken took %s", elapsed)
					}
					if failOpen {
						harness.Expect(t, r, 200, "")
						e.SMTP.WaitMail(t, "ann@example.org", 10*time.Second)
						return
					}
					expectBlocked(t, r, "M_THREEPID_DENIED", "rule webhook", tt.reason)
					if n := len(e.SMTP.Mails()); n != 0 {
						t.Fatalf("a blocked requestToken sent %d mails", n)
					}
				})
			})
		}
	}
}

// TestPolicyEmailDomains: the e-mail domain rules on subdomains, case,
// look-alike and IDN domains and trailing dots, at requestToken and at bind
// (where the identity server validated the address).
func TestPolicyEmailDomains(t *testing.T) {
	const (
		allowed = "allowed"
		invalid = "invalid"
	)
	tests := []struct {
		name, policy string
		// want per address: allowed, invalid (400 M_INVALID_PARAM before
		// the policy), or the rule that blocks it.
		want map[string]string
	}{
		{"denied", "{email_domains_denied: [Spam.Example., \"@bad.example\"]}", map[string]string{
			"eve@spam.example":                     "email_domains_denied",
			"eve@SPAM.Example":                     "email_domains_denied",
			"eve@mx.spam.example":                  "email_domains_denied",
			"eve@a.b.spam.example":                 "email_domains_denied",
			"eve@bad.example":                      "email_domains_denied",
			"eve@spam\uff0eexample":                "email_domains_denied", // fullwidth full stop: "." to IDNA
			"eve@spam\u3002example":                "email_domains_denied", // ideographic full stop
			"eve@mx\uff61spam.example":             "email_domains_denied", // halfwidth ideographic full stop
			"eve@\u017fpam.example":                "email_domains_denied", // long s: "s" under NFKC
			"eve@\uff33\uff30\uff21\uff2d.example": "email_domains_denied", // fullwidth SPAM
			"eve@notspam.example":                  allowed,
			"eve@spam.example.org":                 allowed,
			"eve@spamexample":                      allowed,
			"spam.example@example.org":             allowed,
			"eve@spam.example.":                    invalid,
			"eve@spam..example":                    invalid,
		}},
		{"allowed", "{email_domains_allowed: [example.org]}", map[string]string{
			"ann@example.org":           allowed,
			"ann@Sub.EXAMPLE.org":       allowed,
			"ann@example\uff0eorg":      allowed,
			"ann@evilexample.org":       "email_domains_allowed",
			"ann@example.org.evil.test": "email_domains_allowed",
			"ann@ex\u0430mple.org":      "email_domains_allowed", // Cyrillic a
			"ann@xn--exmple-4nf.org":    "email_domains_allowed",
			"example.org@evil.test":     "email_domains_allowed",
			"ann@example.org.":          invalid,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			harness.Run(t, func(t *testing.T, b storagetest.Backend) {
				e := harness.Start(t, b, harness.Options{IdentityServers: 1, ExtraYAML: "policy: " + tt.policy + "\n"})
				u := e.NewUser("domains")
				for _, address := range slices.Sorted(maps.Keys(tt.want)) {
					want := tt.want[address]
					r := e.Do("POST", requestTokenPath, "", map[string]any{"client_secret": "sec", "email": address, "send_attempt": 1})
					switch want {
					case allowed:
						harness.Expect(t, r, 200, "")
					case invalid:
						harness.Expect(t, r, 400, "M_INVALID_PARAM")
					default:
						if r.Status != 403 || r.ErrCode() != "M_THREEPID_DENIED" || !strings.Contains(string(r.Body), want) {
							t.Errorf("requestToken %q: %d %s, want 403 M_THREEPID_DENIED by %s", address, r.Status, r.Body, want)
						}
					}
					if want == invalid {
						continue
					}
					// The same address validated by the identity server.
					r = e.Bind(t, u, 0, "email", address)
					if want == allowed {
						harness.Expect(t, r, 200, "")
					} else if r.Status != 403 || r.ErrCode() != "M_FORBIDDEN" || !strings.Contains(string(r.Body), want) {
						t.Errorf("bind %q: %d %s, want 403 M_FORBIDDEN by %s", address, r.Status, r.Body, want)
					}
				}
			})
		})
	}
}

// TestPolicyMSISDNCountries: calling-code rules, at requestToken and at
// bind (which may carry numbers libphonenumber cannot place).
func TestPolicyMSISDNCountries(t *testing.T) {
	type number struct{ country, typed, msisdn string }
	gb := number{"GB", "07700 900124", "447700900124"}
	us := number{"US", "(201) 555-0123", "12015550123"}
	ca := number{"CA", "613 555 0143", "16135550143"}
	fr := number{"FR", "06 12 34 56 78", "33612345678"}
	unplaced := number{"", "", "999123456789"} // calling code 999 is not assigned
	tests := []struct {
		name, policy string
		// blocked maps each number to the rule blocking it ("" allowed).
		blocked map[number]string
	}{
		{"allowed", `{msisdn_countries_allowed: ["44", "+1"]}`, map[number]string{
			gb: "", us: "", ca: "", fr: "msisdn_countries_allowed", unplaced: "msisdn_countries_allowed"}},
		{"denied", `{msisdn_countries_denied: ["1"]}`, map[number]string{
			gb: "", us: "msisdn_countries_denied", ca: "msisdn_countries_denied", fr: "", unplaced: ""}},
		{"both", `{msisdn_countries_allowed: ["44", "33"], msisdn_countries_denied: ["33"]}`, map[number]string{
			gb: "", fr: "msisdn_countries_denied", us: "msisdn_countries_allowed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			harness.Run(t, func(t *testing.T, b storagetest.Backend) {
				e := harness.Start(t, b, harness.Options{IdentityServers: 1, ExtraYAML: "policy: " + tt.policy + "\n"})
				u := e.NewUser("phones")
				for n, rule := range tt.blocked {
					if n.country != "" {
						r := e.Do("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", map[string]any{
							"client_secret": "sec", "country": n.country, "phone_number": n.typed, "send_attempt": 1})
						if rule == "" {
							harness.Expect(t, r, 200, "")
						} else {
							expectBlocked(t, r, "M_THREEPID_DENIED", rule, "calling code")
						}
					}
					r := e.Bind(t, u, 0, "msisdn", n.msisdn)
					if rule == "" {
						harness.Expect(t, r, 200, "")
					} else {
						expectBlocked(t, r, "M_FORBIDDEN", rule, "calling code")
					}
				}
			})
		})
	}
}

// TestPolicyMaxThreepids: max_threepids_per_user is checked at /add (403
// M_THREEPID_DENIED naming it) and a delete frees a place.
func TestPolicyMaxThreepids(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{ExtraYAML: "policy: {max_threepids_per_user: 2}\n"})
		u := e.NewUser("limited")
		steps := []struct {
			name, address string
			deleteFirst   string
			status        int
		}{
			{"first", "one@example.org", "", 200},
			{"second", "two@example.org", "", 200},
			{"third", "three@example.org", "", 403},
			{"after a delete", "three@example.org", "two@example.org", 200},
			{"over again", "four@example.org", "", 403},
		}
		for _, s := range steps {
			if s.deleteFirst != "" {
				harness.Expect(t, e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": s.deleteFirst}), 200, "")
			}
			secret := "sec-" + strings.ReplaceAll(s.name, " ", "-")
			sid := e.ValidateEmail(t, secret, s.address)
			r := e.AddThreepid(t, u, sid, secret)
			if s.status == 200 {
				harness.Expect(t, r, 200, "")
			} else {
				expectBlocked(t, r, "M_THREEPID_DENIED", "max_threepids_per_user", "at most 2")
			}
			if n := len(e.Threepids(t, u)); n > 2 {
				t.Fatalf("%s: the account holds %d 3PIDs", s.name, n)
			}
		}

		// Adds racing for the last place: exactly one gets it.
		racer := e.NewUser("racer")
		const racers = 6
		sids := make([]string, racers)
		for i := range racers {
			sids[i] = e.ValidateEmail(t, fmt.Sprintf("race-%d", i), fmt.Sprintf("race%d@example.org", i))
		}
		harness.Expect(t, e.AddThreepid(t, racer, sids[0], "race-0"), 200, "")
		answers := make([]harness.Response, racers)
		var wg sync.WaitGroup
		for i := 1; i < racers; i++ {
			wg.Go(func() { answers[i] = e.AddThreepid(t, racer, sids[i], fmt.Sprintf("race-%d", i)) })
		}
		wg.Wait()
		won := 0
		for _, r := range answers[1:] {
			if r.Status == 200 {
				won++
			} else {
				expectBlocked(t, r, "M_THREEPID_DENIED", "max_threepids_per_user", "at most 2")
			}
		}
		if n := len(e.Threepids(t, racer)); won != 1 || n != 2 {
			t.Fatalf("racing adds: %d won, the account holds %d 3PIDs; want 1 and 2", won, n)
		}
	})
}
