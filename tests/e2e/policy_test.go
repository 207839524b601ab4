package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/events"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/harness"
)

const (
	requestTokenPath = "/_matrix/client/v3/account/3pid/email/requestToken"
	hookSecret       = "hook-s3cret"
)

// hook is a webhook receiver on 127.0.0.1, as an operator would write one: it
// checks every body with policy.VerifySignature under hookSecret and answers
// 401 when the signature does not match; otherwise it records the body and
// answers what answer says.
type hook struct {
	srv *httptest.Server

	mu       sync.Mutex
	answer   func(ctx context.Context, ev events.Event) (status int, body string)
	received []hookCall
	refused  int
}

// hookCall is one verified request and the status it was answered.
type hookCall struct {
	Event  events.Event
	Status int
}

func newHook(t *testing.T, answer func(ctx context.Context, ev events.Event) (int, string)) *hook {
	t.Helper()
	h := &hook{answer: answer}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil || !policy.VerifySignature(hookSecret, body, r.Header.Get(policy.SignatureHeader)) {
		h.mu.Lock()
		h.refused++
		h.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var ev events.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		http.Error(w, "bad JSON", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	answer := h.answer
	h.mu.Unlock()
	status, reply := answer(r.Context(), ev)
	h.mu.Lock()
	h.received = append(h.received, hookCall{Event: ev, Status: status})
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, reply)
}

func (h *hook) setAnswer(answer func(ctx context.Context, ev events.Event) (int, string)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.answer = answer
}

func (h *hook) calls() []hookCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.received)
}

func (h *hook) refusedCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refused
}

// allowAll, and deny(ops...) which refuses those ops with a reason.
func allowAll(context.Context, events.Event) (int, string) { return 200, `{"allow": true}` }

func deny(ops ...policy.Op) func(context.Context, events.Event) (int, string) {
	return func(_ context.Context, ev events.Event) (int, string) {
		if slices.Contains(ops, ev.Op) {
			return 200, fmt.Sprintf(`{"allow": false, "reason": "no %s today"}`, ev.Op)
		}
		return 200, `{"allow": true}`
	}
}

// policyYAML is a policy section whose webhook calls h signed with secret;
// webhookKeys and policyKeys are more keys (", key: value") of each.
func policyYAML(h *hook, secret, webhookKeys, policyKeys string) string {
	return fmt.Sprintf("policy: {webhook: {url: %q, secret: %q%s}%s}\n", h.srv.URL, secret, webhookKeys, policyKeys)
}

// expectBlocked checks a 403 with errcode whose text names the rule and reason.
func expectBlocked(t *testing.T, r harness.Response, errcode, rule, reason string) {
	t.Helper()
	harness.Expect(t, r, 403, errcode)
	msg, _ := r.JSON(t)["error"].(string)
	if !strings.Contains(msg, rule) || !strings.Contains(msg, reason) {
		t.Fatalf("error %q does not name rule %s and reason %q", msg, rule, reason)
	}
}

func unbindResult(t *testing.T, r harness.Response) string {
	t.Helper()
	harness.Expect(t, r, 200, "")
	s, _ := r.JSON(t)["id_server_unbind_result"].(string)
	return s
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

// TestPolicyBlocksDelete: a refused removal is 403 M_FORBIDDEN, the 3PID and
// its binding stay, and no identity server is called.
func TestPolicyBlocksDelete(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		h := newHook(t, deny(policy.OpRemove))
		e := harness.Start(t, b, harness.Options{IdentityServers: 1, ExtraYAML: policyYAML(h, hookSecret, "", "")})
		u := e.NewUser("keeper")
		e.AddEmail(t, u, "keeper@example.org")
		harness.Expect(t, e.Bind(t, u, 0, "email", "keeper@example.org"), 200, "")
		r := e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": "keeper@example.org"})
		expectBlocked(t, r, "M_FORBIDDEN", "webhook", "no remove today")
		if list := e.Threepids(t, u); len(list) != 1 {
			t.Fatalf("threepids after a blocked delete: %v", list)
		}
		if got := e.BindingsOf(t, u, "keeper@example.org"); len(got) != 1 {
			t.Fatalf("bindings after a blocked delete: %v", got)
		}
		if n := len(e.IS[0].UnbindCalls()); n != 0 {
			t.Fatalf("a blocked delete sent %d unbinds", n)
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

// TestPolicyBlocksUnbind: a refused unbind answers no-support and keeps the
// binding (ours and the identity server's); a delete whose unbind is refused
// still removes the 3PID from the account and answers no-support.
func TestPolicyBlocksUnbind(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		h := newHook(t, deny(policy.OpUnbind))
		e := harness.Start(t, b, harness.Options{IdentityServers: 1, ExtraYAML: policyYAML(h, hookSecret, "", "")})
		u := e.NewUser("stuck")
		e.AddEmail(t, u, "stuck@example.org")
		harness.Expect(t, e.Bind(t, u, 0, "email", "stuck@example.org"), 200, "")
		for _, body := range []map[string]any{
			{"medium": "email", "address": "stuck@example.org"},
			{"medium": "email", "address": "stuck@example.org", "id_server": e.IS[0].Name()},
		} {
			if got := unbindResult(t, e.Do("POST", unbindPath, u.Token, body)); got != "no-support" {
				t.Fatalf("blocked unbind %v answered %q", body, got)
			}
		}
		if got := unbindResult(t, e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": "stuck@example.org"})); got != "no-support" {
			t.Fatalf("delete with a blocked unbind answered %q", got)
		}
		if list := e.Threepids(t, u); len(list) != 0 {
			t.Fatalf("delete with a blocked unbind kept %v", list)
		}
		if got := e.BindingsOf(t, u, "stuck@example.org"); len(got) != 1 {
			t.Fatalf("recorded bindings after blocked unbinds: %v", got)
		}
		if got := e.IS[0].Bindings()["stuck@example.org"]; got != u.ID || len(e.IS[0].UnbindCalls()) != 0 {
			t.Fatalf("IS holds %q after %d unbind calls", got, len(e.IS[0].UnbindCalls()))
		}
	})
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
				waitFor(t, "the webhook call", func() bool { return len(h.calls())+h.refusedCount() == 1 }, 10*time.Second)
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

// TestEventsWebhook: add, bind, lost (bind takeover and onupdate), unbind
// and remove reach the events webhook, signed, although it was down when they
// happened and threepidd restarted meanwhile.
func TestEventsWebhook(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		down := func(context.Context, events.Event) (int, string) { return 503, `{}` }
		h := newHook(t, down)
		e := harness.Start(t, b, harness.Options{IdentityServers: 1,
			ExtraYAML: fmt.Sprintf("policy: {events_webhook: {url: %q, secret: %q}}\n", h.srv.URL, hookSecret)})
		is := e.IS[0]
		alice, bob, carol := e.NewUser("alice"), e.NewUser("bob"), e.NewUser("carol")
		e.AddEmail(t, alice, "alice@example.org")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "alice@example.org"), 200, "")
		harness.Expect(t, e.Bind(t, bob, 0, "email", "alice@example.org"), 200, "") // alice loses it
		if got := unbindResult(t, e.Do("POST", unbindPath, bob.Token, map[string]any{"medium": "email", "address": "alice@example.org"})); got != "success" {
			t.Fatalf("unbind: %s", got)
		}
		harness.Expect(t, e.Do("POST", deletePath, alice.Token, map[string]any{"medium": "email", "address": "alice@example.org"}), 200, "")
		harness.Expect(t, e.Bind(t, carol, 0, "email", "carol@example.org"), 200, "")
		if err := onupdate.Send(context.Background(), nil, is.Key(), is.Name(), harness.ServerName, e.URL,
			onupdate.Body{Threepid: "carol@example.org", Medium: "email", Deleted: true, MXID: carol.ID}); err != nil {
			t.Fatalf("onupdate: %v", err)
		}

		want := []string{
			"user_threepid add @alice:hs.test alice@example.org ",
			"identity_server_binding bind @alice:hs.test alice@example.org id1.test",
			"identity_server_binding lost @alice:hs.test alice@example.org id1.test",
			"identity_server_binding bind @bob:hs.test alice@example.org id1.test",
			"identity_server_binding unbind @bob:hs.test alice@example.org id1.test",
			"user_threepid remove @alice:hs.test alice@example.org ",
			"identity_server_binding bind @carol:hs.test carol@example.org id1.test",
			"identity_server_binding lost @carol:hs.test carol@example.org id1.test",
		}
		// Every event is tried while the receiver is down, and kept.
		waitFor(t, "a failed delivery of every event", func() bool { return len(distinct(h.calls(), 503)) == len(want) }, 30*time.Second)
		e.Restart()
		h.setAnswer(func(context.Context, events.Event) (int, string) { return 204, "" })
		// Generous: an event whose delivery the restart interrupted waits
		// for its outbox lease to expire.
		waitFor(t, "every event delivered", func() bool { return len(distinct(h.calls(), 204)) == len(want) }, 3*time.Minute)

		var got []string
		for _, ev := range distinct(h.calls(), 204) {
			got = append(got, strings.Join([]string{ev.Callback, string(ev.Op), ev.UserID, ev.Address, ev.IDServer}, " "))
			if ev.At <= 0 || ev.Medium != "email" {
				t.Errorf("event %+v", ev)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("delivered events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if n := h.refusedCount(); n != 0 {
			t.Fatalf("%d deliveries had a bad signature", n)
		}
	})
}

// distinct returns the events answered status, once per event_id.
func distinct(calls []hookCall, status int) []events.Event {
	seen := map[string]bool{}
	var out []events.Event
	for _, c := range calls {
		if c.Status == status && !seen[c.Event.ID] {
			seen[c.Event.ID] = true
			out = append(out, c.Event)
		}
	}
	return out
}

// waitFor polls cond until it holds, failing after timeout.
func waitFor(t *testing.T, what string, cond func() bool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestEventsOff: without events_webhook.url nothing is queued.
func TestEventsOff(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		u := e.NewUser("quiet")
		e.AddEmail(t, u, "quiet@example.org")
		harness.Expect(t, e.Bind(t, u, 0, "email", "quiet@example.org"), 200, "")
		if n, err := e.Server.Store.CountOutbox(context.Background(), events.OutboxKind); err != nil || n != 0 {
			t.Fatalf("%d events queued with events off (%v)", n, err)
		}
	})
}
