package policy_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/policy"
)

// StaffOnlyBinds is a custom policy: only staff accounts may publish their
// 3PIDs on identity servers. To compile it into threepidd, register it from
// an init function: func init() { policy.Register(StaffOnlyBinds{}) }.
type StaffOnlyBinds struct{}

// CheckUserThreepid lets every account change its own 3PIDs.
func (StaffOnlyBinds) CheckUserThreepid(context.Context, policy.Change) (policy.Decision, error) {
	return policy.Allowed, nil
}

// CheckBinding blocks binds by accounts that are not staff.
func (StaffOnlyBinds) CheckBinding(_ context.Context, c policy.Change) (policy.Decision, error) {
	if c.Op == policy.OpBind && !strings.HasPrefix(c.UserID, "@staff-") {
		return policy.Decision{Rule: "staff_only_binds", Reason: "only staff accounts may publish their 3PIDs"}, nil
	}
	return policy.Allowed, nil
}

// A custom Checker chained after the built-in rules: the first block wins.
func ExampleChain() {
	rules, err := policy.NewRules(config.Policy{EmailDomainsDenied: []string{"spam.example"}})
	if err != nil {
		panic(err)
	}
	chain := policy.Chain{rules, StaffOnlyBinds{}}
	ctx := context.Background()
	for _, c := range []policy.Change{
		{Callback: policy.CallbackIdentityServerBinding, Op: policy.OpBind, UserID: "@staff-ann:example.org", Medium: "email", Address: "ann@example.org", IDServer: "id.example.org"},
		{Callback: policy.CallbackIdentityServerBinding, Op: policy.OpBind, UserID: "@bob:example.org", Medium: "email", Address: "bob@example.org", IDServer: "id.example.org"},
		{Callback: policy.CallbackIdentityServerBinding, Op: policy.OpBind, UserID: "@staff-cy:example.org", Medium: "email", Address: "cy@mx.spam.example", IDServer: "id.example.org"},
	} {
		d, err := chain.CheckBinding(ctx, c)
		if err != nil {
			panic(err)
		}
		fmt.Printf("%s: allow=%t rule=%q\n", c.UserID, d.Allow, d.Rule)
	}
	// Output:
	// @staff-ann:example.org: allow=true rule=""
	// @bob:example.org: allow=false rule="staff_only_binds"
	// @staff-cy:example.org: allow=false rule="email_domains_denied"
}
