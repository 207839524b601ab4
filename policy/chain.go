package policy

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/metrics"
)

var blocks = metrics.Factory.NewCounterVec(metrics.CounterOpts("policy_blocks_total",
	"Changes blocked by a policy, by callback and rule."), []string{"callback", "rule"})

func init() {
	// The built-in rules' series exist from the start, at zero, for
	// dashboards and rate(); a compiled-in policy's appear with its first block.
	for callback, rules := range map[string][]string{
		CallbackUserThreepid: {RuleEmailDomainsAllowed, RuleEmailDomainsDenied, RuleMSISDNCountriesAllowed,
			RuleMSISDNCountriesDenied, RuleWebhook},
		CallbackIdentityServerBinding: {RuleEmailDomainsAllowed, RuleEmailDomainsDenied, RuleMSISDNCountriesAllowed,
			RuleMSISDNCountriesDenied, RuleBindIdentityServersAllowed, RuleWebhook},
	} {
		for _, rule := range rules {
			blocks.WithLabelValues(callback, rule)
		}
	}
	for _, outcome := range []string{"blocked", "allowed"} {
		webhookFailures.WithLabelValues(outcome)
	}
}

// Chain asks its Checkers in order; the first block (or error) wins.
type Chain []Checker

// CheckUserThreepid implements Checker.
func (ch Chain) CheckUserThreepid(ctx context.Context, c Change) (Decision, error) {
	return ch.check(ctx, c, Checker.CheckUserThreepid)
}

// CheckBinding implements Checker.
func (ch Chain) CheckBinding(ctx context.Context, c Change) (Decision, error) {
	return ch.check(ctx, c, Checker.CheckBinding)
}

// JudgesBindAddress implements AddressJudge: whether any of its Checkers does.
func (ch Chain) JudgesBindAddress() bool {
	for _, checker := range ch {
		if JudgesBindAddress(checker) {
			return true
		}
	}
	return false
}

func (ch Chain) check(ctx context.Context, c Change, ask func(Checker, context.Context, Change) (Decision, error)) (Decision, error) {
	for _, checker := range ch {
		d, err := ask(checker, ctx, c)
		if err != nil {
			return Decision{}, err
		}
		if !d.Allow {
			blocks.WithLabelValues(c.Callback, d.Rule).Inc()
			return d, nil
		}
	}
	return Allowed, nil
}

// registry holds the policies compiled in with Register.
var registry struct {
	sync.Mutex
	checkers []Checker
}

// Register adds a custom policy to the chain that [New] builds, after the
// built-in rules and before the webhook. Call it from an init function of a
// package the binary imports (see the package documentation).
func Register(c Checker) {
	registry.Lock()
	defer registry.Unlock()
	registry.checkers = append(registry.checkers, c)
}

func registered() []Checker {
	registry.Lock()
	defer registry.Unlock()
	return append([]Checker(nil), registry.checkers...)
}

// New builds the policy of a configuration: the built-in rules, the
// registered policies, then the webhook when policy.webhook.url is set. The
// webhook is called with client. An invalid policy section is an error naming
// the key.
func New(cfg config.Policy, client *http.Client) (Checker, error) {
	rules, err := NewRules(cfg)
	if err != nil {
		return nil, err
	}
	chain := append(Chain{rules}, registered()...)
	if cfg.Webhook.URL != "" {
		w, err := NewWebhook(cfg.Webhook, client)
		if err != nil {
			return nil, fmt.Errorf("policy.webhook: %w", err)
		}
		chain = append(chain, w)
	}
	return chain, nil
}
