package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threepidd/threepidd/account"
	"github.com/threepidd/threepidd/events"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/importer"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/outbound"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
)

// rawCall is one request a rawHook received: the body as sent, whether its
// signature verified under hookSecret, and the status it was answered.
type rawCall struct {
	Body     []byte
	Verified bool
	Status   int
}

// rawHook is a webhook receiver that keeps the raw bodies, so that the exact
// set of keys and the signature can be checked. serve answers each request
// (for paths other than the base one too, e.g. redirect targets).
type rawHook struct {
	srv   *httptest.Server
	mu    sync.Mutex
	serve func(w http.ResponseWriter, r *http.Request, body []byte) int
	calls []rawCall
}

func newRawHook(t *testing.T, serve func(w http.ResponseWriter, r *http.Request, body []byte) int) *rawHook {
	t.Helper()
	h := &rawHook{serve: serve}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		serve := h.serve
		h.mu.Unlock()
		status := serve(w, r, body)
		h.mu.Lock()
		h.calls = append(h.calls, rawCall{Body: body, Verified: policy.VerifySignature(hookSecret, body, r.Header.Get(policy.SignatureHeader)), Status: status})
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *rawHook) set(serve func(w http.ResponseWriter, r *http.Request, body []byte) int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.serve = serve
}

func (h *rawHook) received() []rawCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

// reply writes status and body as JSON and returns status.
func reply(w http.ResponseWriter, status int, body string) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
	return status
}

// checkKeys fails unless body is a JSON object with exactly the keys want.
func checkKeys(t *testing.T, body []byte, want ...string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("webhook body is not an object: %v: %s", err, body)
	}
	got := slices.Sorted(maps.Keys(m))
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("webhook body keys %v, want %v: %s", got, want, body)
	}
	return m
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
			return reply(w, 200, fmt.Sprintf(`{"allow": false, "reason": "audit refuses %s"}`, c.Op))
		}
		return reply(w, 200, `{"allow": true}`)
	}
}

// auditState is what a probe may change: 3PIDs and bindings threepidd
// holds for the user, calls and bindings at the identity server, messages sent.
type auditState struct {
	Threepids, Bindings, ISBindCalls, ISUnbindCalls, ISBound, Messages int
}

func stateOf(t *testing.T, e *harness.Env, u harness.User, address string) auditState {
	t.Helper()
	is := e.IS[0]
	bound := 0
	if is.Bindings()[address] == u.ID {
		bound = 1
	}
	return auditState{
		Threepids: len(e.Threepids(t, u)), Bindings: len(e.BindingsOf(t, u, address)),
		ISBindCalls: is.BindCalls(), ISUnbindCalls: len(is.UnbindCalls()), ISBound: bound,
		Messages: len(e.SMTP.Mails()) + len(e.SMS.Messages()),
	}
}

// TestAuditPolicyBlocks: every block of issue 7 point 2, made by a policy
// webhook that refuses one kind of change: the answer, the error text naming
// the rule, what is stored, what the identity server saw, and the exact signed
// body the webhook was asked with.
func TestAuditPolicyBlocks(t *testing.T) {
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
		change  func(s *auditState)
		lastAsk policy.Change
	}{
		{name: "email requestToken", refuse: op(policy.OpAdd, true),
			do: func(t *testing.T, e *harness.Env, _ harness.User) harness.Response {
				return e.Do("POST", requestTokenPath, "", map[string]any{"client_secret": "sec", "email": "Blockee@EXAMPLE.org", "send_attempt": 1})
			},
			status: 403, errcode: "M_THREEPID_DENIED", change: func(*auditState) {},
			lastAsk: policy.Change{Callback: "user_threepid", Op: "add", Medium: "email", Address: address}},
		{name: "msisdn requestToken", refuse: op(policy.OpAdd, true),
			do: func(t *testing.T, e *harness.Env, _ harness.User) harness.Response {
				return e.Do("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", map[string]any{
					"client_secret": "sec", "country": "GB", "phone_number": "07700 900123", "send_attempt": 1})
			},
			status: 403, errcode: "M_THREEPID_DENIED", change: func(*auditState) {},
			lastAsk: policy.Change{Callback: "user_threepid", Op: "add", Medium: "msisdn", Address: "447700900123"}},
		{name: "add", refuse: op(policy.OpAdd, false),
			do: func(t *testing.T, e *harness.Env, u harness.User) harness.Response {
				sid := e.ValidateEmail(t, "sec-add", address)
				return e.AddThreepid(t, u, sid, "sec-add")
			},
			status: 403, errcode: "M_THREEPID_DENIED", change: func(s *auditState) { s.Messages++ },
			lastAsk: policy.Change{Callback: "user_threepid", Op: "add", UserID: user, Medium: "email", Address: address}},
		{name: "delete", added: true, bound: true, refuse: op(policy.OpRemove, false),
			do: func(t *testing.T, e *harness.Env, u harness.User) harness.Response {
				return e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": "BLOCKEE@example.org"})
			},
			status: 403, errcode: "M_FORBIDDEN", change: func(*auditState) {},
			lastAsk: policy.Change{Callback: "user_threepid", Op: "remove", UserID: user, Medium: "email", Address: address}},
		{name: "bind", added: true, refuse: op(policy.OpBind, false),
			do: func(t *testing.T, e *harness.Env, u harness.User) harness.Response {
				return e.Bind(t, u, 0, "email", address)
			},
			status: 403, errcode: "M_FORBIDDEN", change: func(*auditState) {},
			lastAsk: policy.Change{Callback: "identity_server_binding", Op: "bind", UserID: user, Medium: "email", Address: address, IDServer: "id1.test"}},
		{name: "unbind naming the identity server", added: true, bound: true, refuse: op(policy.OpUnbind, false),
			do: func(t *testing.T, e *harness.Env, u harness.User) harness.Response {
				return e.Do("POST", unbindPath, u.Token, map[string]any{"medium": "email", "address": address, "id_server": "id1.test"})
			},
			status: 200, unbindResult: "no-support", change: func(*auditState) {},
			lastAsk: policy.Change{Callback: "identity_server_binding", Op: "unbind", UserID: user, Medium: "email", Address: address, IDServer: "id1.test"}},
		{name: "unbind of the recorded bindings", added: true, bound: true, refuse: op(policy.OpUnbind, false),
			do: func(t *testing.T, e *harness.Env, u harness.User) harness.Response {
				return e.Do("POST", unbindPath, u.Token, map[string]any{"medium": "email", "address": address})
			},
			status: 200, unbindResult: "no-support", change: func(*auditState) {},
			lastAsk: policy.Change{Callback: "identity_server_binding", Op: "unbind", UserID: user, Medium: "email", Address: address, IDServer: "id1.test"}},
		{name: "delete whose unbind is blocked", added: true, bound: true, refuse: op(policy.OpUnbind, false),
			do: func(t *testing.T, e *harness.Env, u harness.User) harness.Response {
				return e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": address})
			},
			status: 200, unbindResult: "no-support", change: func(s *auditState) { s.Threepids-- },
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
					expectBlocked(t, r, tt.errcode, "rule webhook", "audit refuses "+string(tt.lastAsk.Op))
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

// TestAuditPolicyWebhookAnswers: policy webhook answers that are not a
// usable {"allow": bool} block the change, or let it through with
// fail_open, promptly and never as a 500.
func TestAuditPolicyWebhookAnswers(t *testing.T) {
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

// TestAuditPolicyEmailDomains: the e-mail domain rules on subdomains, case,
// look-alike and IDN domains and trailing dots, at requestToken and at bind
// (where the identity server validated the address).
func TestAuditPolicyEmailDomains(t *testing.T) {
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

// TestAuditPolicyMSISDNCountries: calling-code rules, at requestToken and at
// bind (which may carry numbers libphonenumber cannot place).
func TestAuditPolicyMSISDNCountries(t *testing.T) {
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

// TestAuditPolicyMaxThreepids: max_threepids_per_user is checked at /add (403
// M_THREEPID_DENIED naming it) and a delete frees a place.
func TestAuditPolicyMaxThreepids(t *testing.T) {
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

var eventKeys = []string{"event_id", "callback", "op", "user_id", "medium", "address", "id_server", "at"}

// TestAuditPolicyAfterEvents: every applied change (add, remove, bind, unbind,
// lost by takeover and by onupdate, an admin removal, a deactivation through
// the relay and one through the admin API) reaches the events webhook once,
// with the documented body and signature, although the receiver was down and
// threepidd restarted in between. The mirror is on, so events pass through it.
func TestAuditPolicyAfterEvents(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		h := newRawHook(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) int { return reply(w, 503, `{}`) })
		e := harness.Start(t, b, harness.Options{IdentityServers: 1, HomeserverYAML: mirrorYAML,
			ExtraYAML: fmt.Sprintf("admin_token: %s\npolicy: {events_webhook: {url: %q, secret: %q}}\n", adminToken, h.srv.URL, hookSecret)})
		e.HS.SetAdminToken(hsAdminToken)
		is := e.IS[0]
		alice, bob, carol, dave, erin := e.NewUser("alice"), e.NewUser("bob"), e.NewUser("carol"), e.NewUser("dave"), e.NewUser("erin")
		e.AddEmail(t, alice, "alice@example.org")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "alice@example.org"), 200, "")
		harness.Expect(t, e.Bind(t, bob, 0, "email", "alice@example.org"), 200, "")
		if got := unbindResult(t, e.Do("POST", unbindPath, bob.Token, map[string]any{"medium": "email", "address": "alice@example.org"})); got != "success" {
			t.Fatalf("unbind: %s", got)
		}
		harness.Expect(t, e.Do("POST", deletePath, alice.Token, map[string]any{"medium": "email", "address": "alice@example.org"}), 200, "")
		e.AddEmail(t, carol, "carol@example.org")
		harness.Expect(t, e.Bind(t, carol, 0, "email", "carol@example.org"), 200, "")
		if err := onupdate.Send(context.Background(), nil, is.Key(), is.Name(), harness.ServerName, e.URL,
			onupdate.Body{Threepid: "carol@example.org", Medium: "email", Deleted: true, MXID: carol.ID}); err != nil {
			t.Fatalf("onupdate: %v", err)
		}
		harness.Expect(t, e.Do("DELETE", adminPrefix+"/users/%40carol%3Ahs.test/threepids/email/carol%40example.org", adminToken, nil), 200, "")
		e.AddEmail(t, dave, "dave@example.org")
		harness.Expect(t, e.Bind(t, dave, 0, "email", "dave@example.org"), 200, "")
		r := e.Do("POST", deactivateV3, dave.Token, map[string]any{})
		session, _ := r.JSON(t)["session"].(string)
		harness.Expect(t, e.Do("POST", deactivateV3, dave.Token, map[string]any{"auth": dave.PasswordAuth(session)}), 200, "")
		e.AddEmail(t, erin, "erin@example.org")
		harness.Expect(t, e.Do("POST", adminPrefix+"/users/%40erin%3Ahs.test/deactivate", adminToken, nil), 200, "")

		want := []string{
			"user_threepid add @alice:hs.test alice@example.org ",
			"identity_server_binding bind @alice:hs.test alice@example.org id1.test",
			"identity_server_binding lost @alice:hs.test alice@example.org id1.test",
			"identity_server_binding bind @bob:hs.test alice@example.org id1.test",
			"identity_server_binding unbind @bob:hs.test alice@example.org id1.test",
			"user_threepid remove @alice:hs.test alice@example.org ",
			"user_threepid add @carol:hs.test carol@example.org ",
			"identity_server_binding bind @carol:hs.test carol@example.org id1.test",
			"identity_server_binding lost @carol:hs.test carol@example.org id1.test",
			"user_threepid remove @carol:hs.test carol@example.org ",
			"user_threepid add @dave:hs.test dave@example.org ",
			"identity_server_binding bind @dave:hs.test dave@example.org id1.test",
			"identity_server_binding unbind @dave:hs.test dave@example.org id1.test",
			"user_threepid remove @dave:hs.test dave@example.org ",
			"user_threepid add @erin:hs.test erin@example.org ",
			"user_threepid remove @erin:hs.test erin@example.org ",
		}
		ids := func(status int) map[string]int {
			out := map[string]int{}
			for _, c := range h.received() {
				if c.Status == status {
					var ev events.Event
					_ = json.Unmarshal(c.Body, &ev)
					out[ev.ID]++
				}
			}
			return out
		}
		waitFor(t, "a failed delivery of every event", func() bool { return len(ids(503)) == len(want) }, 30*time.Second)
		e.Restart()
		h.set(func(w http.ResponseWriter, _ *http.Request, _ []byte) int { return reply(w, 200, `{}`) })
		waitFor(t, "every event delivered", func() bool { return len(ids(200)) == len(want) }, 3*time.Minute)
		time.Sleep(2 * time.Second) // anything delivered twice would show by now
		for id, n := range ids(200) {
			if n != 1 {
				t.Errorf("event %s delivered %d times", id, n)
			}
		}
		var got []string
		for _, c := range h.received() {
			if c.Status != 200 {
				continue
			}
			if !c.Verified {
				t.Fatalf("an event failed the receiver's signature check: %s", c.Body)
			}
			m := checkKeys(t, c.Body, eventKeys...)
			if at, _ := m["at"].(float64); at <= 0 || m["medium"] != "email" || m["event_id"] == "" {
				t.Errorf("event %s", c.Body)
			}
			got = append(got, fmt.Sprintf("%s %s %s %s %s", m["callback"], m["op"], m["user_id"], m["address"], m["id_server"]))
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("delivered events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if n, err := e.Server.Store.CountOutbox(context.Background(), events.OutboxKind); err != nil || n != 0 {
			t.Fatalf("%d events still queued (%v)", n, err)
		}
	})
}

// failingProxy forwards to target and answers 500 M_UNKNOWN to the admin
// API's user-detail call number failAt (1-based; 0: never).
type failingProxy struct {
	srv    *httptest.Server
	failAt atomic.Int64
	n      atomic.Int64
}

func newFailingProxy(t *testing.T, target string) *failingProxy {
	t.Helper()
	p := &failingProxy{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/_synapse/admin/v2/users/") {
			if n := p.n.Add(1); n == p.failAt.Load() {
				reply(w, 500, `{"errcode": "M_UNKNOWN", "error": "Internal server error"}`)
				return
			}
		}
		req, err := http.NewRequestWithContext(r.Context(), r.Method, target+r.URL.RequestURI(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		defer resp.Body.Close()
		maps.Copy(w.Header(), resp.Header)
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// TestAuditPolicyImport: the Synapse import over several pages, with a
// non-canonical address, an address on two accounts, a guest, and an admin
// API failure midway that leaves nothing half-imported; reruns converge.
func TestAuditPolicyImport(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{HomeserverYAML: "admin_token: " + hsAdminToken})
		e.HS.SetAdminToken(hsAdminToken)
		proxy := newFailingProxy(t, e.HS.URL())
		hsCfg := e.Config.Homeserver
		hsCfg.URL = proxy.srv.URL
		hs, err := homeserver.New(hsCfg, outbound.NewTransport())
		if err != nil {
			t.Fatal(err)
		}
		source := &importer.Synapse{Admin: hs.SynapseAdmin(hsAdminToken), URL: proxy.srv.URL, PageSize: 2, Parallel: 1}
		var users []string
		add := func(localpart string, tps ...fakes.HomeserverThreepid) {
			id := e.HS.AddUser(localpart, "pw")
			e.HS.SetThreepids(id, tps)
			users = append(users, id)
		}
		add("imp1", fakes.HomeserverThreepid{Medium: "email", Address: " Mixed.Case@EXAMPLE.Org", ValidatedAt: 11, AddedAt: 10},
			fakes.HomeserverThreepid{Medium: "msisdn", Address: "447700900321", ValidatedAt: 21, AddedAt: 20})
		add("imp2", fakes.HomeserverThreepid{Medium: "email", Address: "dup@example.org"})
		add("imp3", fakes.HomeserverThreepid{Medium: "email", Address: "DUP@Example.org"})
		add("imp4")
		add("imp5", fakes.HomeserverThreepid{Medium: "email", Address: "five@example.org", ValidatedAt: 51, AddedAt: 50})
		guest, _ := e.HS.AddGuest()
		e.HS.SetThreepids(guest, []fakes.HomeserverThreepid{{Medium: "email", Address: "guest@example.org"}})
		users = append(users, guest)
		ctx := context.Background()
		run := func() (importer.Report, error) {
			return (&importer.Importer{Store: e.Server.Store, Source: source}).Run(ctx)
		}

		proxy.failAt.Store(4) // the fourth account read fails: the third page
		if _, err := run(); err == nil || !strings.Contains(err.Error(), "HTTP 500") {
			t.Fatalf("an admin API failure midway: %v, want an error naming HTTP 500", err)
		}
		if got := storeSnapshot(t, e.Server.Store, users); len(got) != 0 {
			t.Fatalf("a failed import wrote %+v", got)
		}

		proxy.failAt.Store(0)
		wantConflicts := []importer.Conflict{{Medium: "email", Address: "dup@example.org",
			Users: []string{"@imp2:hs.test", "@imp3:hs.test"}, Reason: importer.ReasonSeveralAccounts}}
		for i, imported := range []int{3, 0} {
			rep, err := run()
			if err != nil {
				t.Fatalf("import %d: %v", i+1, err)
			}
			if rep.Users != 5 || rep.Found != 5 || rep.Imported != imported || rep.Present != 3-imported || len(rep.Rejected) != 0 ||
				!slices.EqualFunc(rep.Conflicts, wantConflicts, func(a, b importer.Conflict) bool { return fmt.Sprint(a) == fmt.Sprint(b) }) {
				t.Fatalf("import %d: %+v", i+1, rep)
			}
			got := map[string][]string{}
			for user, as := range storeSnapshot(t, e.Server.Store, users) {
				for _, a := range as {
					got[user] = append(got[user], fmt.Sprintf("%s %s %d %d", a.Medium, a.Address, a.ValidatedAt, a.AddedAt))
				}
				slices.Sort(got[user])
			}
			want := map[string][]string{
				"@imp1:hs.test": {"email mixed.case@example.org 11 10", "msisdn 447700900321 21 20"},
				"@imp5:hs.test": {"email five@example.org 51 50"},
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("import %d stored %v, want %v", i+1, got, want)
			}
		}
	})
}

// deactivateOnHomeserver deactivates u directly on the fake homeserver, as if
// the client had not gone through threepidd.
func deactivateOnHomeserver(t *testing.T, e *harness.Env, u harness.User) {
	t.Helper()
	r := harness.Do(t, "POST", e.HS.URL()+deactivateV3, u.Token, map[string]any{})
	session, _ := r.JSON(t)["session"].(string)
	harness.Expect(t, harness.Do(t, "POST", e.HS.URL()+deactivateV3, u.Token, map[string]any{"auth": u.PasswordAuth(session)}), 200, "")
}

// TestAuditPolicyMirror: the mirror keeps the homeserver's other 3PIDs as
// spelled, with their timestamps; retries while the homeserver refuses the
// admin token; and leaves an account deactivated on the homeserver alone.
func TestAuditPolicyMirror(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{HomeserverYAML: mirrorYAML, ExtraYAML: "admin_token: " + adminToken + "\n"})
		e.HS.SetAdminToken(hsAdminToken)
		ctx := context.Background()
		drained := func() bool {
			n, err := e.Server.Store.CountOutbox(ctx, events.MirrorKind)
			return err == nil && n == 0
		}

		t.Run("keeps the homeserver's spelling and timestamps", func(t *testing.T) {
			u := e.NewUser("spelled")
			keep := []fakes.HomeserverThreepid{
				{Medium: "email", Address: "Other@Example.ORG", ValidatedAt: 1234, AddedAt: 1000},
				{Medium: "msisdn", Address: "447700900555", ValidatedAt: 2234, AddedAt: 2000},
			}
			e.HS.SetThreepids(u.ID, keep)
			e.AddEmail(t, u, "new@example.org")
			waitHomeserver(t, e, u.ID, keep, "Other@Example.ORG", "447700900555", "new@example.org")
			harness.Expect(t, e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": "new@example.org"}), 200, "")
			waitHomeserver(t, e, u.ID, keep, "Other@Example.ORG", "447700900555")
		})

		t.Run("admin token refused, then accepted", func(t *testing.T) {
			u := e.NewUser("refused")
			e.HS.SetAdminToken("rotated")
			calls := e.HS.AdminCalls()
			e.AddEmail(t, u, "refused@example.org")
			waitFor(t, "a refused mirror attempt", func() bool { return e.HS.AdminCalls() > calls }, 10*time.Second)
			if drained() {
				t.Fatal("the mirror gave up on a refused admin token")
			}
			e.HS.SetAdminToken(hsAdminToken)
			waitHomeserver(t, e, u.ID, nil, "refused@example.org")
		})

		t.Run("deactivated on the homeserver", func(t *testing.T) {
			u := e.NewUser("gone")
			e.AddEmail(t, u, "gone@example.org")
			waitHomeserver(t, e, u.ID, nil, "gone@example.org")
			deactivateOnHomeserver(t, e, u)
			waitFor(t, "the mirror queue to drain", drained, 10*time.Second)
			calls := e.HS.AdminCalls()
			harness.Expect(t, e.Do("DELETE", adminPrefix+"/users/%40gone%3Ahs.test/threepids/email/gone%40example.org", adminToken, nil), 200, "")
			waitFor(t, "the mirror to look and give up", func() bool { return e.HS.AdminCalls() > calls && drained() }, 10*time.Second)
			if got := e.HS.Threepids(u.ID); len(got) != 0 || !e.HS.Deactivated(u.ID) {
				t.Fatalf("the deactivated account now holds %+v (deactivated %t)", got, e.HS.Deactivated(u.ID))
			}
		})
	})
}

// withoutSession returns r's body with any UIA "session" blanked.
func withoutSession(t *testing.T, r harness.Response) string {
	t.Helper()
	var m map[string]any
	if json.Unmarshal(r.Body, &m) != nil {
		return string(r.Body)
	}
	if _, ok := m["session"]; ok {
		m["session"] = ""
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestAuditPolicyDeactivation: /account/deactivate through threepidd passes
// the homeserver's UIA and errors on unchanged, acts only on the token's own
// account, removes 3PIDs and unbinds once the homeserver said 200, combines
// the unbind results, and answers a retry as the homeserver does.
func TestAuditPolicyDeactivation(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		ctx := context.Background()
		is := e.IS[0]
		setup := func(localpart string) (harness.User, string) {
			u := e.NewUser(localpart)
			address := localpart + "@example.org"
			e.AddEmail(t, u, address)
			harness.Expect(t, e.Bind(t, u, 0, "email", address), 200, "")
			return u, address
		}
		held := func(u harness.User, address string) string {
			as, err := e.Server.Store.AssociationsOf(ctx, u.ID)
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprintf("3pids=%d bindings=%d is=%t deactivated=%t", len(as), len(e.BindingsOf(t, u, address)),
				is.Bindings()[address] == u.ID, e.HS.Deactivated(u.ID))
		}

		t.Run("homeserver answers passed through", func(t *testing.T) {
			u, address := setup("careful")
			before := held(u, address)
			// What the homeserver itself answers, and what threepidd answers.
			for _, c := range []struct {
				name    string
				body    func(session string) any
				status  int
				errcode string
			}{
				{"UIA round", func(string) any { return map[string]any{} }, 401, ""},
				{"wrong password", func(s string) any {
					a := u.PasswordAuth(s)
					a["password"] = "wrong"
					return map[string]any{"auth": a}
				}, 401, "M_FORBIDDEN"},
				{"erase not a boolean", func(s string) any { return map[string]any{"auth": u.PasswordAuth(s), "erase": "yes"} }, 400, "M_BAD_JSON"},
				{"not JSON", func(string) any { return "{" }, 400, "M_NOT_JSON"},
			} {
				direct := harness.Do(t, "POST", e.HS.URL()+deactivateV3, u.Token, map[string]any{})
				session, _ := direct.JSON(t)["session"].(string)
				direct = harness.Do(t, "POST", e.HS.URL()+deactivateV3, u.Token, c.body(session))
				relayed := e.Do("POST", deactivateV3, u.Token, c.body(session))
				harness.Expect(t, relayed, c.status, c.errcode)
				// A UIA session is new on each round; everything else is the same.
				if relayed.Status != direct.Status || withoutSession(t, relayed) != withoutSession(t, direct) {
					t.Fatalf("%s: threepidd answered %d %s, the homeserver %d %s", c.name, relayed.Status, relayed.Body, direct.Status, direct.Body)
				}
			}
			if after := held(u, address); after != before {
				t.Fatalf("refused deactivations changed %s to %s", before, after)
			}
		})

		t.Run("guest", func(t *testing.T) {
			_, token := e.HS.AddGuest()
			relays := len(e.HS.RelayCalls())
			harness.Expect(t, e.Do("POST", deactivateV3, token, map[string]any{}), 403, "M_GUEST_ACCESS_FORBIDDEN")
			if n := len(e.HS.RelayCalls()); n != relays {
				t.Fatal("a guest's deactivation was relayed")
			}
		})

		t.Run("only the token's account", func(t *testing.T) {
			alice, aliceAddress := setup("bystander")
			bob, bobAddress := setup("quitter")
			before := held(alice, aliceAddress)
			r := e.Do("POST", deactivateV3, bob.Token, map[string]any{})
			session, _ := r.JSON(t)["session"].(string)
			// Alice's identity in the auth dict does not make it her account.
			auth := bob.PasswordAuth(session)
			r = e.Do("POST", deactivateV3, bob.Token, map[string]any{"auth": auth, "user_id": alice.ID})
			harness.Expect(t, r, 200, "")
			if got := r.JSON(t)["id_server_unbind_result"]; got != "success" {
				t.Fatalf("id_server_unbind_result %v", got)
			}
			if after := held(alice, aliceAddress); after != before {
				t.Fatalf("bob's deactivation changed alice: %s -> %s", before, after)
			}
			if got := held(bob, bobAddress); got != "3pids=0 bindings=0 is=false deactivated=true" {
				t.Fatalf("bob after deactivation: %s", got)
			}
			// The client retries: the homeserver's answer for a dead token.
			harness.Expect(t, e.Do("POST", deactivateV3, bob.Token, map[string]any{"auth": auth}), 401, "M_UNKNOWN_TOKEN")
			if got := held(bob, bobAddress); got != "3pids=0 bindings=0 is=false deactivated=true" {
				t.Fatalf("bob after a retry: %s", got)
			}
		})

		t.Run("identity server failing", func(t *testing.T) {
			u, address := setup("unlucky")
			is.SetMode(fakes.IdentityServerFail500)
			r := e.Do("POST", deactivateV3, u.Token, map[string]any{})
			session, _ := r.JSON(t)["session"].(string)
			r = e.Do("POST", deactivateV3, u.Token, map[string]any{"auth": u.PasswordAuth(session)})
			harness.Expect(t, r, 200, "")
			if got := r.JSON(t)["id_server_unbind_result"]; got != "no-support" {
				t.Fatalf("id_server_unbind_result %v with the identity server failing", got)
			}
			if got := held(u, address); got != "3pids=0 bindings=1 is=true deactivated=true" {
				t.Fatalf("after deactivation with the identity server failing: %s", got)
			}
			is.SetMode(fakes.IdentityServerNormal)
			waitFor(t, "the queued unbind", func() bool { return held(u, address) == "3pids=0 bindings=0 is=false deactivated=true" }, 60*time.Second)
			if n, err := e.Server.Store.CountOutbox(ctx, account.DeactivateKind); err != nil || n != 0 {
				t.Fatalf("%d cleanups left queued (%v)", n, err)
			}
		})
	})
}
