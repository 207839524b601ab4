// Package policy decides whether a 3PID change may happen. Checks run before
// the change and may block it with a reason; events are reported after a change
// was applied (package events).
//
// The two callbacks are the ones proposed for Synapse's module API
// (matrix-org/synapse#14955): one for the 3PIDs associated with an account on
// this homeserver ([Checker.CheckUserThreepid]: add, remove, and requestToken
// as an add with an empty user ID), one for bindings on identity servers
// ([Checker.CheckBinding]: bind, unbind).
//
// # What a block does
//
// Adding (or asking for a validation token) answers 403 M_THREEPID_DENIED,
// deleting 403 M_FORBIDDEN, binding 403 M_FORBIDDEN with nothing sent to the
// identity server. A blocked unbind answers 200 with id_server_unbind_result
// "no-support" and the binding stays; a delete whose unbind is blocked still
// removes the 3PID from the account. The error text names the rule.
// Administrators (the admin API) are never asked.
//
// # The checks threepidd runs
//
// [New] builds the chain from the policy section of the configuration: the
// built-in rules ([NewRules]: e-mail domains, phone calling codes, identity
// servers allowed for binds), then the policies compiled in with [Register],
// then the webhook ([Webhook]). The first block wins.
//
// The webhook receives POST {"callback", "op", "user_id", "medium",
// "address", "id_server"} with the header X-Threepidd-Signature: the hex
// HMAC-SHA256 of the body under the shared secret. Receivers check it with
// [VerifySignature]. It answers {"allow": true} or {"allow": false, "reason":
// "..."}. Unless fail_open is set, a webhook that cannot be reached, times out,
// answers a non-2xx status (redirects are not followed) or something that is
// not such an object blocks the change, with a reason saying so.
//
// # Custom policies in Go
//
// A policy is any type implementing [Checker]. To compile one into the
// threepidd binary, put it in a package that registers it from init, and
// blank-import that package from the binary's main package (cmd/threepidd, or
// a copy of it):
//
//	package corppolicy
//
//	func init() { policy.Register(Policy{}) }
//
//	// Policy lets only staff bind their 3PIDs on identity servers.
//	type Policy struct{}
//
//	func (Policy) CheckUserThreepid(context.Context, policy.Change) (policy.Decision, error) {
//		return policy.Allowed, nil
//	}
//
//	func (Policy) CheckBinding(_ context.Context, c policy.Change) (policy.Decision, error) {
//		if c.Op == policy.OpBind && !strings.HasPrefix(c.UserID, "@staff-") {
//			return policy.Decision{Rule: "corp_staff_only", Reason: "only staff accounts may publish their 3PIDs"}, nil
//		}
//		return policy.Allowed, nil
//	}
//
// and in cmd/threepidd/main.go: import _ "example.org/corppolicy". Registered
// policies run after the built-in rules and before the webhook. A Checker
// returns an error only when it cannot decide (the request then fails with
// 500); to block, it returns a Decision with Allow false, a Rule naming it and
// a Reason the user may read. A Chain composes Checkers for other uses (see the
// example).
package policy

import "context"

// Op is the kind of change.
type Op string

// The operations a policy sees.
const (
	OpAdd    Op = "add"
	OpRemove Op = "remove"
	OpBind   Op = "bind"
	OpUnbind Op = "unbind"
	// OpLost reports a binding the user lost (taken over or deleted on the
	// identity server); it is only ever an event, never checked.
	OpLost Op = "lost"
)

// Callback names, as sent to webhooks.
const (
	CallbackUserThreepid          = "user_threepid"
	CallbackIdentityServerBinding = "identity_server_binding"
)

// Change is one proposed or applied change. IDServer is empty for the 3PIDs of
// an account; UserID is empty at requestToken (the endpoint is unauthenticated).
type Change struct {
	Callback string `json:"callback"`
	Op       Op     `json:"op"`
	UserID   string `json:"user_id"`
	Medium   string `json:"medium"`
	Address  string `json:"address"`
	IDServer string `json:"id_server"`
}

// Decision is a policy's answer. Rule names the rule that blocked the change.
type Decision struct {
	Allow  bool
	Reason string
	Rule   string
}

// Message is the text a user sees for a block: it names the rule and gives
// the reason.
func (d Decision) Message() string {
	msg := "Blocked by policy"
	if d.Rule != "" {
		msg += " rule " + d.Rule
	}
	if d.Reason != "" {
		msg += ": " + d.Reason
	}
	return msg
}

// Allowed is the decision that lets a change through.
var Allowed = Decision{Allow: true}

// Checker decides before a change. An error means the policy could not decide
// (the caller treats it as a failure, not as a block).
type Checker interface {
	// CheckUserThreepid is called before a 3PID is added to or removed from an
	// account, and before a validation token is sent.
	CheckUserThreepid(ctx context.Context, c Change) (Decision, error)
	// CheckBinding is called before a 3PID is bound on or unbound from an identity server.
	CheckBinding(ctx context.Context, c Change) (Decision, error)
}

// AddressJudge is implemented by Checkers that can tell whether their
// CheckBinding of a bind ever depends on the 3PID's medium and address. A bind
// learns the address only by asking the identity server first (an extra round
// trip), so it asks only when the policy needs it. A Checker that does not
// implement AddressJudge is taken to need it.
type AddressJudge interface {
	JudgesBindAddress() bool
}

// JudgesBindAddress reports whether c's CheckBinding of a bind may depend on
// the 3PID (see [AddressJudge]).
func JudgesBindAddress(c Checker) bool {
	if j, ok := c.(AddressJudge); ok {
		return j.JudgesBindAddress()
	}
	return true
}

// AllowAll is the Checker that blocks nothing.
type AllowAll struct{}

// CheckUserThreepid implements Checker.
func (AllowAll) CheckUserThreepid(context.Context, Change) (Decision, error) { return Allowed, nil }

// CheckBinding implements Checker.
func (AllowAll) CheckBinding(context.Context, Change) (Decision, error) { return Allowed, nil }

// JudgesBindAddress implements AddressJudge: it judges nothing.
func (AllowAll) JudgesBindAddress() bool { return false }
