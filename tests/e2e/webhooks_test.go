package e2e

// Receivers for the policy and events webhooks.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/threepidd/threepidd/events"
	"github.com/threepidd/threepidd/policy"
)

// hookSecret signs the requests of every webhook the tests configure.
const hookSecret = "hook-s3cret"

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
