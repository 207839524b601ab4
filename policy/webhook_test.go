package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
)

func TestSignature(t *testing.T) {
	body := []byte(`{"op":"add"}`)
	sig := Sign("s3cret", body)
	tests := []struct {
		name, secret, body, header string
		want                       bool
	}{
		{"valid", "s3cret", string(body), sig, true},
		{"upper-case hex", "s3cret", string(body), strings.ToUpper(sig), true},
		{"other secret", "other", string(body), sig, false},
		{"other body", "s3cret", `{"op":"remove"}`, sig, false},
		{"truncated", "s3cret", string(body), sig[:len(sig)-2], false},
		{"not hex", "s3cret", string(body), "zz" + sig[2:], false},
		{"empty", "s3cret", string(body), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := VerifySignature(tt.secret, []byte(tt.body), tt.header); got != tt.want {
				t.Fatalf("VerifySignature = %t, want %t", got, tt.want)
			}
		})
	}
	// RFC 4231 test case 2.
	if got := Sign("Jefe", []byte("what do ya want for nothing?")); got != "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" {
		t.Fatalf("Sign = %s", got)
	}
}

// receiver is a policy webhook on 127.0.0.1 that records what it was sent.
type receiver struct {
	srv     *httptest.Server
	changes chan Change
}

func newReceiver(t *testing.T, secret string, answer func(w http.ResponseWriter, c Change)) *receiver {
	t.Helper()
	rc := &receiver{changes: make(chan Change, 10)}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" ||
			!VerifySignature(secret, body, r.Header.Get(SignatureHeader)) {
			http.Error(w, "bad request", http.StatusUnauthorized)
			return
		}
		var c Change
		if err := json.Unmarshal(body, &c); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		rc.changes <- c
		answer(w, c)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func reply(body string) func(http.ResponseWriter, Change) {
	return func(w http.ResponseWriter, _ Change) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}
}

func TestWebhook(t *testing.T) {
	change := Change{Callback: CallbackIdentityServerBinding, Op: OpBind, UserID: "@a:hs", Medium: "email", Address: "a@example.org", IDServer: "id.example.org"}
	tests := []struct {
		name       string
		answer     func(http.ResponseWriter, Change)
		secret     string // the secret threepidd signs with (the receiver uses "shared")
		failOpen   bool
		wantAllow  bool
		wantReason string
	}{
		{"allow", reply(`{"allow": true}`), "shared", false, true, ""},
		{"deny with reason", reply(`{"allow": false, "reason": "not a company address"}`), "shared", false, false, "not a company address"},
		{"deny without reason", reply(`{"allow": false}`), "shared", false, false, "refused by the policy service"},
		{"bad signature refused by the receiver", reply(`{"allow": true}`), "wrong", false, false, "the policy service answered HTTP 401"},
		{"bad signature, fail open", reply(`{"allow": true}`), "wrong", true, true, ""},
		{"server error", func(w http.ResponseWriter, _ Change) { http.Error(w, "oops", 500) }, "shared", false, false, "the policy service answered HTTP 500"},
		{"garbled", reply(`allow`), "shared", false, false, `the policy service's answer is not {"allow": true|false}`},
		{"allow missing", reply(`{"reason": "x"}`), "shared", false, false, `the policy service's answer is not {"allow": true|false}`},
		{"allow not a boolean", reply(`{"allow": "yes"}`), "shared", false, false, `the policy service's answer is not {"allow": true|false}`},
		{"garbled, fail open", reply(`[]`), "shared", true, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, "shared", tt.answer)
			w, err := NewWebhook(config.PolicyWebhook{URL: rc.srv.URL, Secret: tt.secret, FailOpen: tt.failOpen}, rc.srv.Client())
			if err != nil {
				t.Fatal(err)
			}
			d, err := w.CheckBinding(context.Background(), change)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow != tt.wantAllow || d.Reason != tt.wantReason || (!d.Allow && d.Rule != RuleWebhook) {
				t.Fatalf("decision %+v, want allow %t reason %q", d, tt.wantAllow, tt.wantReason)
			}
			if tt.secret == "shared" {
				select {
				case got := <-rc.changes:
					if got != change {
						t.Fatalf("receiver got %+v, want %+v", got, change)
					}
				default:
					t.Fatal("the receiver saw no verified change")
				}
			}
		})
	}
}

func TestWebhookBody(t *testing.T) {
	bodies := make(chan []byte, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		bodies <- body
		_, _ = io.WriteString(w, `{"allow": true}`)
	}))
	defer srv.Close()
	w, err := NewWebhook(config.PolicyWebhook{URL: srv.URL, Secret: "s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// requestToken: no user yet, and no identity server for user 3PIDs.
	if _, err := w.CheckUserThreepid(context.Background(), Change{Callback: CallbackUserThreepid, Op: OpAdd, Medium: "email", Address: "a@example.org"}); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(<-bodies, &raw); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"callback": "user_threepid", "op": "add", "user_id": "", "medium": "email", "address": "a@example.org", "id_server": ""}
	if len(raw) != len(want) {
		t.Fatalf("body %v, want %v", raw, want)
	}
	for k, v := range want {
		if raw[k] != v {
			t.Fatalf("body %v, want %v", raw, want)
		}
	}
}

func TestWebhookUnavailable(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	tests := []struct {
		name       string
		url        string
		failOpen   bool
		wantAllow  bool
		wantReason string
	}{
		{"timeout fails closed", slow.URL, false, false, "the policy service did not answer within 100ms"},
		{"timeout, fail open", slow.URL, true, true, ""},
		{"refused fails closed", closed.URL, false, false, "the policy service could not be reached"},
		{"refused, fail open", closed.URL, true, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := NewWebhook(config.PolicyWebhook{URL: tt.url, Secret: "s", Timeout: 100 * time.Millisecond, FailOpen: tt.failOpen}, nil)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			d, err := w.CheckUserThreepid(context.Background(), Change{Callback: CallbackUserThreepid, Op: OpAdd, Medium: "email", Address: "a@example.org"})
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow != tt.wantAllow || d.Reason != tt.wantReason {
				t.Fatalf("decision %+v, want allow %t reason %q", d, tt.wantAllow, tt.wantReason)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Fatalf("the call took %s despite the 100ms timeout", elapsed)
			}
		})
	}
}

// TestWebhookRedirect: a redirect is the webhook's answer, not followed: a
// 302 would turn the question into a GET whose answer says nothing about the
// change, a 307 would send it elsewhere.
func TestWebhookRedirect(t *testing.T) {
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/moved" {
				_, _ = io.WriteString(w, `{"allow": true}`)
				return
			}
			http.Redirect(w, r, "/moved", status)
		}))
		defer srv.Close()
		for _, failOpen := range []bool{false, true} {
			w, err := NewWebhook(config.PolicyWebhook{URL: srv.URL + "/check", Secret: "s", FailOpen: failOpen}, nil)
			if err != nil {
				t.Fatal(err)
			}
			d, err := w.CheckBinding(context.Background(), Change{Callback: CallbackIdentityServerBinding, Op: OpBind, Medium: "email", Address: "a@example.org"})
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("the policy service answered HTTP %d", status)
			if failOpen {
				want = ""
			}
			if d.Allow != failOpen || d.Reason != want {
				t.Fatalf("HTTP %d, fail_open %t: decision %+v, want allow %t reason %q", status, failOpen, d, failOpen, want)
			}
		}
	}
}

func TestNewWebhookRejects(t *testing.T) {
	for _, u := range []string{"", "ftp://policy.example/", "/check", "http://"} {
		if _, err := NewWebhook(config.PolicyWebhook{URL: u}, nil); err == nil || !strings.HasPrefix(err.Error(), "url: ") {
			t.Errorf("NewWebhook(%q) = %v, want a url error", u, err)
		}
	}
	if _, err := NewWebhook(config.PolicyWebhook{URL: "http://127.0.0.1:1/", Timeout: -time.Second}, nil); err == nil {
		t.Error("a negative timeout was accepted")
	}
}
