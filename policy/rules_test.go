package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/threepidd/threepidd/config"
)

func TestRules(t *testing.T) {
	cfg := config.Policy{
		EmailDomainsAllowed:        []string{"Example.ORG", "@corp.example"},
		EmailDomainsDenied:         []string{"spam.example.org."},
		MSISDNCountriesAllowed:     []string{"44", "+1"},
		MSISDNCountriesDenied:      []string{"1"},
		BindIdentityServersAllowed: []string{"id.example.org"},
	}
	rules, err := NewRules(cfg)
	if err != nil {
		t.Fatal(err)
	}
	open, err := NewRules(config.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	add := func(medium, address string) Change {
		return Change{Callback: CallbackUserThreepid, Op: OpAdd, UserID: "@a:hs", Medium: medium, Address: address}
	}
	bind := func(op Op, medium, address, idServer string) Change {
		return Change{Callback: CallbackIdentityServerBinding, Op: op, UserID: "@a:hs", Medium: medium, Address: address, IDServer: idServer}
	}
	tests := []struct {
		name     string
		rules    *Rules
		c        Change
		wantRule string // "" = allowed
	}{
		{"allowed domain", rules, add("email", "a@example.org"), ""},
		{"allowed subdomain", rules, add("email", "a@mail.example.org"), ""},
		{"second allowed domain", rules, add("email", "a@corp.example"), ""},
		{"domain suffix is not a subdomain", rules, add("email", "a@badexample.org"), RuleEmailDomainsAllowed},
		{"other domain", rules, add("email", "a@gmail.com"), RuleEmailDomainsAllowed},
		{"denied subdomain of an allowed domain", rules, add("email", "a@spam.example.org"), RuleEmailDomainsDenied},
		{"denied deeper subdomain", rules, add("email", "a@x.spam.example.org"), RuleEmailDomainsDenied},
		{"denied, fullwidth full stop", rules, add("email", "a@spam\uff0eexample.org"), RuleEmailDomainsDenied},
		{"denied, ideographic full stop", rules, add("email", "a@x\u3002spam.example.org"), RuleEmailDomainsDenied},
		{"denied, halfwidth ideographic full stop", rules, add("email", "a@x\uff61spam.example.org"), RuleEmailDomainsDenied},
		{"denied, fullwidth letters", rules, add("email", "a@\uff33\uff50am.example.org"), RuleEmailDomainsDenied},
		{"denied, long s", rules, add("email", "a@\u017fpam.example.org"), RuleEmailDomainsDenied},
		{"allowed, fullwidth full stop", rules, add("email", "a@example\uff0eorg"), ""},
		{"look-alike letter is another domain", rules, add("email", "a@ex\u0430mple.org"), RuleEmailDomainsAllowed},
		{"requestToken has no user", rules, Change{Callback: CallbackUserThreepid, Op: OpAdd, Medium: "email", Address: "a@gmail.com"}, RuleEmailDomainsAllowed},
		{"removal is never blocked", rules, Change{Callback: CallbackUserThreepid, Op: OpRemove, UserID: "@a:hs", Medium: "email", Address: "a@gmail.com"}, ""},
		{"allowed calling code", rules, add("msisdn", "447700900001"), ""},
		{"denied wins over allowed", rules, add("msisdn", "12025550123"), RuleMSISDNCountriesDenied},
		{"calling code not allowed", rules, add("msisdn", "33612345678"), RuleMSISDNCountriesAllowed},
		{"unplaceable number not allowed", rules, add("msisdn", "999"), RuleMSISDNCountriesAllowed},
		{"no rules: anything", open, add("email", "a@gmail.com"), ""},
		{"no rules: any number", open, add("msisdn", "33612345678"), ""},
		{"bind on allowed server", rules, bind(OpBind, "email", "a@example.org", "id.example.org"), ""},
		{"bind on other server", rules, bind(OpBind, "email", "a@example.org", "vector.im"), RuleBindIdentityServersAllowed},
		{"bind of denied address", rules, bind(OpBind, "email", "a@spam.example.org", "id.example.org"), RuleEmailDomainsDenied},
		{"bind of number not allowed", rules, bind(OpBind, "msisdn", "33612345678", "id.example.org"), RuleMSISDNCountriesAllowed},
		{"unbind anywhere", rules, bind(OpUnbind, "email", "a@gmail.com", "vector.im"), ""},
		{"no rules: bind anywhere", open, bind(OpBind, "email", "a@gmail.com", "vector.im"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check := tt.rules.CheckUserThreepid
			if tt.c.Callback == CallbackIdentityServerBinding {
				check = tt.rules.CheckBinding
			}
			d, err := check(context.Background(), tt.c)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow != (tt.wantRule == "") || d.Rule != tt.wantRule {
				t.Fatalf("decision %+v, want rule %q", d, tt.wantRule)
			}
			if !d.Allow && d.Reason == "" {
				t.Fatalf("block without a reason: %+v", d)
			}
		})
	}
}

func TestRulesReasons(t *testing.T) {
	rules, err := NewRules(config.Policy{EmailDomainsDenied: []string{"spam.example"}, MSISDNCountriesDenied: []string{"7"}})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := rules.CheckUserThreepid(context.Background(), Change{Op: OpAdd, Medium: "email", Address: "x@mx.Spam.example"})
	if d.Reason != "e-mail addresses at mx.spam.example are not allowed" {
		t.Fatalf("reason %q", d.Reason)
	}
	d, _ = rules.CheckUserThreepid(context.Background(), Change{Op: OpAdd, Medium: "msisdn", Address: "79123456789"})
	if d.Reason != "phone numbers with the calling code +7 are not allowed" {
		t.Fatalf("reason %q", d.Reason)
	}
}

func TestNewRulesRejects(t *testing.T) {
	tests := []struct {
		name    string
		cfg     config.Policy
		wantKey string
	}{
		{"empty domain", config.Policy{EmailDomainsDenied: []string{" "}}, "policy.email_domains_denied"},
		{"address instead of domain", config.Policy{EmailDomainsAllowed: []string{"a@example.org"}}, "policy.email_domains_allowed"},
		{"leading dot", config.Policy{EmailDomainsAllowed: []string{".example.org"}}, "policy.email_domains_allowed"},
		{"region instead of calling code", config.Policy{MSISDNCountriesAllowed: []string{"GB"}}, "policy.msisdn_countries_allowed"},
		{"unassigned calling code", config.Policy{MSISDNCountriesDenied: []string{"999"}}, "policy.msisdn_countries_denied"},
		{"bad server name", config.Policy{BindIdentityServersAllowed: []string{"https://id.example.org"}}, "policy.bind_identity_servers_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewRules(tt.cfg)
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantKey+": ") {
				t.Fatalf("error %v, want one naming %s", err, tt.wantKey)
			}
		})
	}
}
