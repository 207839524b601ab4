package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
)

// fixed is a Checker with one answer for both callbacks that counts its calls.
type fixed struct {
	d     Decision
	err   error
	calls int
}

func (f *fixed) CheckUserThreepid(context.Context, Change) (Decision, error) {
	f.calls++
	return f.d, f.err
}

func (f *fixed) CheckBinding(ctx context.Context, c Change) (Decision, error) {
	return f.CheckUserThreepid(ctx, c)
}

func TestChain(t *testing.T) {
	failure := errors.New("policy store down")
	block := func(rule string) *fixed { return &fixed{d: Decision{Rule: rule, Reason: "no"}} }
	tests := []struct {
		name      string
		chain     []*fixed
		wantRule  string
		wantErr   error
		wantCalls []int
	}{
		{"empty allows", nil, "", nil, nil},
		{"all allow", []*fixed{{d: Allowed}, {d: Allowed}}, "", nil, []int{1, 1}},
		{"first block wins", []*fixed{{d: Allowed}, block("a"), block("b")}, "a", nil, []int{1, 1, 0}},
		{"error stops the chain", []*fixed{{err: failure}, block("b")}, "", failure, []int{1, 0}},
	}
	for _, tt := range tests {
		for _, binding := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/binding=%t", tt.name, binding), func(t *testing.T) {
				var ch Chain
				for _, f := range tt.chain {
					f.calls = 0
					ch = append(ch, f)
				}
				check := ch.CheckUserThreepid
				if binding {
					check = ch.CheckBinding
				}
				d, err := check(context.Background(), Change{Op: OpAdd})
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				if err == nil && (d.Allow != (tt.wantRule == "") || d.Rule != tt.wantRule) {
					t.Fatalf("decision %+v, want rule %q", d, tt.wantRule)
				}
				for i, f := range tt.chain {
					if f.calls != tt.wantCalls[i] {
						t.Fatalf("checker %d called %d times, want %d", i, f.calls, tt.wantCalls[i])
					}
				}
			})
		}
	}
}

// TestNew checks the order New builds: built-in rules, registered policies,
// then the webhook.
func TestNew(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, `{"allow": false, "reason": "webhook says no"}`)
	}))
	defer srv.Close()
	custom := &fixed{d: Allowed}
	Register(custom)
	t.Cleanup(func() { registry.checkers = nil })

	p, err := New(config.Policy{
		EmailDomainsDenied: []string{"spam.example"},
		Webhook:            config.PolicyWebhook{URL: srv.URL, Secret: "s"},
	}, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d, _ := p.CheckUserThreepid(ctx, Change{Callback: CallbackUserThreepid, Op: OpAdd, Medium: "email", Address: "a@spam.example"})
	if d.Rule != RuleEmailDomainsDenied || custom.calls != 0 || hits.Load() != 0 {
		t.Fatalf("built-in block: decision %+v, custom calls %d, webhook hits %d", d, custom.calls, hits.Load())
	}
	d, _ = p.CheckUserThreepid(ctx, Change{Callback: CallbackUserThreepid, Op: OpAdd, Medium: "email", Address: "a@example.org"})
	if d.Rule != RuleWebhook || d.Reason != "webhook says no" || custom.calls != 1 || hits.Load() != 1 {
		t.Fatalf("webhook block: decision %+v, custom calls %d, webhook hits %d", d, custom.calls, hits.Load())
	}

	custom.d = Decision{Rule: "custom", Reason: "custom says no"}
	d, _ = p.CheckBinding(ctx, Change{Callback: CallbackIdentityServerBinding, Op: OpBind, Medium: "email", Address: "a@example.org", IDServer: "id"})
	if d.Rule != "custom" || hits.Load() != 1 {
		t.Fatalf("custom block: decision %+v, webhook hits %d", d, hits.Load())
	}

	if _, err := New(config.Policy{MSISDNCountriesDenied: []string{"xx"}}, nil); err == nil || !strings.Contains(err.Error(), "policy.msisdn_countries_denied") {
		t.Fatalf("bad rule: %v", err)
	}
	if _, err := New(config.Policy{Webhook: config.PolicyWebhook{URL: "mailto:x@y"}}, nil); err == nil || !strings.HasPrefix(err.Error(), "policy.webhook: url: ") {
		t.Fatalf("bad webhook: %v", err)
	}
}

// TestJudgesBindAddress: a bind asks the identity server for the address only
// when some part of the policy may judge it.
func TestJudgesBindAddress(t *testing.T) {
	rules := func(cfg config.Policy) Checker {
		r, err := NewRules(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	webhook, err := NewWebhook(config.PolicyWebhook{URL: "http://127.0.0.1:1/check", Timeout: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		checker Checker
		want    bool
	}{
		{"allow all", AllowAll{}, false},
		{"no rules", rules(config.Policy{}), false},
		{"identity servers only", rules(config.Policy{BindIdentityServersAllowed: []string{"id.example.org"}}), false},
		{"a 3PID limit only", rules(config.Policy{MaxThreepidsPerUser: 3}), false},
		{"e-mail domains allowed", rules(config.Policy{EmailDomainsAllowed: []string{"example.org"}}), true},
		{"e-mail domains denied", rules(config.Policy{EmailDomainsDenied: []string{"spam.example"}}), true},
		{"countries allowed", rules(config.Policy{MSISDNCountriesAllowed: []string{"44"}}), true},
		{"countries denied", rules(config.Policy{MSISDNCountriesDenied: []string{"1"}}), true},
		{"webhook", webhook, true},
		{"a custom Checker", &fixed{d: Allowed}, true},
		{"chain without", Chain{rules(config.Policy{}), AllowAll{}}, false},
		{"chain with", Chain{rules(config.Policy{}), webhook}, true},
	}
	for _, tc := range tests {
		if got := JudgesBindAddress(tc.checker); got != tc.want {
			t.Errorf("%s: JudgesBindAddress = %v, want %v", tc.name, got, tc.want)
		}
	}
}
