// Package bindings is the service behind /3pid/bind, /3pid/unbind and the
// unbind part of /3pid/delete: it talks to identity servers (the configured
// ones, and those clients name, through the outbound guard), records the
// bindings threepidd made, applies the loss of a binding (taken over by
// another user's bind, or reported by an identity server's onupdate) with the
// user's notification, and retries unbinds that could not be delivered
// through the durable outbox.
package bindings

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/events"
	"github.com/threepidd/threepidd/federation/identity"
	"github.com/threepidd/threepidd/internal/clock"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/outbox"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/threepid"
)

// OutboxKind is the outbox kind of unbinds to retry.
const OutboxKind = "unbind"

// Service implements binding and unbinding.
type Service struct {
	Store storage.Store
	// Identity is the client of the configured identity servers.
	Identity *identity.Client
	// Named is the client of the identity servers clients name that are not
	// configured (Discovery with the user's own identity server), reached at
	// https://<id_server> on a guarded transport; nil: such a name is refused
	// with 400 M_SERVER_NOT_TRUSTED and nothing is dialled.
	Named *identity.Client
	// Servers are the configured identity servers.
	Servers []config.IdentityServer
	Policy  policy.Checker
	// Events receives every applied change; nil: none.
	Events events.Sink
	Clock  clock.Func
}

// target is an identity server and the client that reaches it.
type target struct {
	is     config.IdentityServer
	client *identity.Client
}

// server returns the identity server clients call name: the configured one
// (its base_url, its pins), else, with a Named client, the server at
// https://<name> whose signing name is name; otherwise 400
// M_SERVER_NOT_TRUSTED.
func (s *Service) server(name string) (target, error) {
	for _, is := range s.Servers {
		if is.ServerName == name {
			return target{is: is, client: s.Identity}, nil
		}
	}
	if s.Named != nil && threepid.ValidServerName(name) {
		return target{is: config.IdentityServer{ServerName: name}, client: s.Named}, nil
	}
	return target{}, mxerr.ServerNotTrusted.WithMessage("Identity server %q is not trusted by this homeserver", name)
}

// Bind binds the 3PID validated in the identity server's session (sid,
// clientSecret) to userID on idServer, and records it. Local users recorded as
// bound to that 3PID on that identity server lose it and are notified.
func (s *Service) Bind(ctx context.Context, userID, idServer, idAccessToken, sid, clientSecret string) error {
	t, err := s.server(idServer)
	if err != nil {
		return err
	}
	// A policy that judges addresses needs the 3PID before the bind: the
	// identity server tells which one the session validated. Without one, the
	// extra round trip is skipped and the policy sees an empty address.
	judged := s.Policy != nil && policy.JudgesBindAddress(s.Policy)
	var medium, address string
	if judged {
		if medium, address, err = t.client.Validated3PID(ctx, t.is, idAccessToken, sid, clientSecret); err != nil {
			return err
		}
	}
	if err := s.check(ctx, policy.OpBind, userID, medium, address, idServer); err != nil {
		var blocked errBlocked
		if errors.As(err, &blocked) {
			return mxerr.Forbidden.WithMessage("%s", blocked.Error())
		}
		return err
	}
	assoc, err := t.client.Bind(ctx, t.is, idAccessToken, sid, clientSecret, userID)
	if err != nil {
		return err
	}
	// Record the canonical address (unbind, delete and onupdate look it up in
	// that form), and only the 3PID the session validated and the policy judged.
	bound, err := threepid.CanonicalAddress(assoc.Medium, assoc.Address)
	if err != nil || (judged && (assoc.Medium != medium || bound != address)) {
		slog.WarnContext(ctx, "identity server bound another 3PID than the session validated", "id_server", idServer, "medium", assoc.Medium)
		return mxerr.Unavailable.WithMessage("identity server %s returned an association for another 3PID", idServer)
	}
	assoc.Address = bound
	now := s.Clock.Now().UnixMilli()
	return s.Store.WithTx(ctx, func(q storage.Querier) error {
		previous, err := q.BindingsOf3PID(ctx, assoc.Medium, assoc.Address, idServer)
		if err != nil {
			return fmt.Errorf("load bindings: %w", err)
		}
		for _, b := range previous {
			if b.UserID == userID {
				continue
			}
			if _, err := s.Lose(ctx, q, Loss{Binding: b, MXID: userID, Origin: idServer, At: now}); err != nil {
				return err
			}
		}
		if err := q.UpsertBinding(ctx, storage.Binding{UserID: userID, Medium: assoc.Medium, Address: assoc.Address, IDServer: idServer, BoundAt: now}); err != nil {
			return fmt.Errorf("record binding: %w", err)
		}
		return s.applied(ctx, q, policy.OpBind, userID, assoc.Medium, assoc.Address, idServer)
	})
}

// Loss is a binding its user lost: another user took the 3PID over on the
// identity server, or the identity server deleted the binding.
type Loss struct {
	// Binding is the record of the binding lost.
	Binding storage.Binding
	// Deleted: the binding was deleted; else it was taken over by MXID.
	Deleted bool
	// MXID is the user the 3PID is now bound to (a takeover) or was bound to
	// (a deletion); empty for a deletion that named nobody.
	MXID string
	// Origin is the identity server that reported it.
	Origin string
	// At is when, in Unix milliseconds.
	At int64
}

// Lose applies l in q, the caller's transaction: the binding record goes, the
// user gets a notification in their 3PID stream (the /sync section), and the
// sinks hear of it (op "lost"). It reports whether the record was still there;
// a binding already gone changes nothing and notifies nobody.
func (s *Service) Lose(ctx context.Context, q storage.Querier, l Loss) (bool, error) {
	b := l.Binding
	removed, err := q.DeleteBinding(ctx, b.UserID, b.Medium, b.Address, b.IDServer)
	if err != nil {
		return false, fmt.Errorf("drop binding: %w", err)
	}
	if !removed {
		return false, nil
	}
	if _, err := q.AppendNotification(ctx, storage.Notification{
		UserID: b.UserID, Medium: b.Medium, Address: b.Address, Deleted: l.Deleted, MXID: l.MXID, Origin: l.Origin, At: l.At,
	}); err != nil {
		return false, fmt.Errorf("notify %s: %w", b.UserID, err)
	}
	return true, s.applied(ctx, q, policy.OpLost, b.UserID, b.Medium, b.Address, b.IDServer)
}

func (s *Service) applied(ctx context.Context, q storage.Querier, op policy.Op, userID, medium, address, idServer string) error {
	return events.Apply(ctx, s.Events, q, policy.Change{Callback: policy.CallbackIdentityServerBinding, Op: op,
		UserID: userID, Medium: medium, Address: address, IDServer: idServer})
}

// List returns the bindings recorded for userID.
func (s *Service) List(ctx context.Context, userID string) ([]storage.Binding, error) {
	bs, err := s.Store.BindingsOf(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("list bindings: %w", err)
	}
	return bs, nil
}

// check asks the policy about a binding change; a block is returned as an
// error whose text names the rule.
func (s *Service) check(ctx context.Context, op policy.Op, userID, medium, address, idServer string) error {
	if s.Policy == nil {
		return nil
	}
	d, err := s.Policy.CheckBinding(ctx, policy.Change{Callback: policy.CallbackIdentityServerBinding, Op: op,
		UserID: userID, Medium: medium, Address: address, IDServer: idServer})
	if err != nil {
		return fmt.Errorf("policy check: %w", err)
	}
	if !d.Allow {
		return errBlocked{d}
	}
	return nil
}

type errBlocked struct{ d policy.Decision }

func (e errBlocked) Error() string { return e.d.Message() }

// Unbind serves /3pid/unbind: an identity server's Matrix error is passed on.
func (s *Service) Unbind(ctx context.Context, userID, medium, address, idServer string) (string, error) {
	return s.unbind(ctx, userID, medium, address, idServer, true)
}

// UnbindOnDelete is the unbind part of /3pid/delete: it never fails for an
// identity server's sake (a Matrix error answers no-support).
func (s *Service) UnbindOnDelete(ctx context.Context, userID, medium, address, idServer string) (string, error) {
	return s.unbind(ctx, userID, medium, address, idServer, false)
}

// targets returns the identity servers to unbind from: the named one
// (configured or not; recorded or not, as binds made directly on the identity
// server count too), or every one recorded for the 3PID.
func (s *Service) targets(ctx context.Context, userID, medium, address, idServer string) ([]target, error) {
	if idServer != "" {
		t, err := s.server(idServer)
		if err != nil {
			return nil, err
		}
		return []target{t}, nil
	}
	recorded, err := s.Store.BindingsOf3PID(ctx, medium, address, "")
	if err != nil {
		return nil, fmt.Errorf("load bindings: %w", err)
	}
	var out []target
	for _, b := range recorded {
		if b.UserID != userID {
			continue
		}
		t, err := s.recordedServer(ctx, b)
		if err != nil {
			return nil, err
		}
		if t != nil {
			out = append(out, *t)
		}
	}
	return out, nil
}

// recordedServer returns the identity server of a binding record, or nil when
// it can no longer be reached (neither configured nor, without a Named client,
// reachable by name): then the record is forgotten.
func (s *Service) recordedServer(ctx context.Context, b storage.Binding) (*target, error) {
	t, err := s.server(b.IDServer)
	if err == nil {
		return &t, nil
	}
	return nil, s.forget(ctx, b.UserID, b.Medium, b.Address, b.IDServer)
}

// forget drops the record of a binding on an identity server threepidd
// cannot reach (not configured without a Named client, or refused by the
// outbound guard): nothing can be unbound there, so no unbind is reported.
func (s *Service) forget(ctx context.Context, userID, medium, address, idServer string) error {
	if _, err := s.Store.DeleteBinding(ctx, userID, medium, address, idServer); err != nil {
		return fmt.Errorf("drop binding of an identity server out of reach: %w", err)
	}
	return nil
}

func (s *Service) unbind(ctx context.Context, userID, medium, address, idServer string, passErrors bool) (string, error) {
	servers, err := s.targets(ctx, userID, medium, address, idServer)
	if err != nil {
		return "", err
	}
	if len(servers) == 0 {
		return threepid.UnbindNoSupport, nil
	}
	result := threepid.UnbindSuccess
	for _, t := range servers {
		r, err := s.unbindOne(ctx, userID, medium, address, t, unbindMode{passErrors: passErrors, checkPolicy: true, named: idServer != ""})
		if err != nil {
			return "", err
		}
		if r != threepid.UnbindSuccess {
			result = threepid.UnbindNoSupport
		}
	}
	return result, nil
}

// unbindMode says how unbindOne treats answers.
type unbindMode struct {
	// passErrors: an identity server's Matrix error is returned (/unbind)
	// rather than answered no-support (/delete).
	passErrors bool
	// checkPolicy: ask the policy first (not for deactivation and an
	// administrator's removal).
	checkPolicy bool
	// named: the client named the identity server, so the outbound guard's
	// refusal of its address is the client's error (400 M_SERVER_NOT_TRUSTED)
	// rather than a reason to forget a record.
	named bool
}

// unbindOne unbinds from one identity server and applies DESIGN.md's mapping.
// A transient failure queues a retry only for a binding userID holds in our
// records: an unbind of something never bound through threepidd is tried
// once, so that nobody can fill the outbox with unbinds of addresses they
// never held.
func (s *Service) unbindOne(ctx context.Context, userID, medium, address string, t target, mode unbindMode) (string, error) {
	var err error
	if mode.checkPolicy {
		err = s.check(ctx, policy.OpUnbind, userID, medium, address, t.is.ServerName)
	}
	if err != nil {
		var blocked errBlocked
		if errors.As(err, &blocked) {
			slog.InfoContext(ctx, "unbind blocked by policy", "id_server", t.is.ServerName, "medium", medium, "rule", blocked.d.Rule)
			return threepid.UnbindNoSupport, nil
		}
		return "", err
	}
	r := t.client.Unbind(ctx, t.is, userID, medium, address)
	switch r.Outcome {
	case identity.Success, identity.NoSupport:
		if err := s.dropOwn(ctx, userID, medium, address, t.is.ServerName); err != nil {
			return "", err
		}
		if r.Outcome == identity.Success {
			return threepid.UnbindSuccess, nil
		}
		return threepid.UnbindNoSupport, nil
	case identity.MatrixError:
		if mode.passErrors {
			return "", r.Err
		}
		return threepid.UnbindNoSupport, nil
	case identity.Refused:
		if mode.named {
			return "", r.Err
		}
		slog.WarnContext(ctx, "unbind refused by the outbound guard: binding record dropped", "id_server", t.is.ServerName, "medium", medium, "detail", r.Detail)
		return threepid.UnbindNoSupport, s.forget(ctx, userID, medium, address, t.is.ServerName)
	default:
		held, err := s.holds(ctx, userID, medium, address, t.is.ServerName)
		if err != nil {
			return "", err
		}
		if !held {
			slog.InfoContext(ctx, "unbind of a binding not recorded failed; not retried", "id_server", t.is.ServerName, "medium", medium, "detail", r.Detail)
			return threepid.UnbindNoSupport, nil
		}
		slog.WarnContext(ctx, "unbind queued for retry", "id_server", t.is.ServerName, "medium", medium, "detail", r.Detail)
		if err := outbox.EnqueueGrouped(ctx, s.Store, OutboxKind, t.is.ServerName, unbindKey(userID, medium, address, t.is.ServerName),
			unbindJob{UserID: userID, Medium: medium, Address: address, IDServer: t.is.ServerName}, s.Clock.Now()); err != nil {
			return "", err
		}
		return threepid.UnbindNoSupport, nil
	}
}

// holds reports whether userID's binding of medium/address on idServer is
// recorded.
func (s *Service) holds(ctx context.Context, userID, medium, address, idServer string) (bool, error) {
	bs, err := s.Store.BindingsOf3PID(ctx, medium, address, idServer)
	if err != nil {
		return false, fmt.Errorf("load bindings: %w", err)
	}
	return slices.ContainsFunc(bs, func(b storage.Binding) bool { return b.UserID == userID }), nil
}

// dropOwn removes userID's own binding record (an unbind, not a loss).
func (s *Service) dropOwn(ctx context.Context, userID, medium, address, idServer string) error {
	return s.Store.WithTx(ctx, func(q storage.Querier) error {
		removed, err := q.DeleteBinding(ctx, userID, medium, address, idServer)
		if err != nil {
			return fmt.Errorf("drop binding: %w", err)
		}
		if !removed {
			return nil
		}
		return s.applied(ctx, q, policy.OpUnbind, userID, medium, address, idServer)
	})
}

// UnbindAll unbinds every binding recorded for userID (deactivation), without
// the policy. Each unbind is tried inline; failures are queued. It answers
// success only if every unbind succeeded.
func (s *Service) UnbindAll(ctx context.Context, userID string) (string, error) {
	return s.unbindRecorded(ctx, userID, func(storage.Binding) bool { return true })
}

// UnbindThreepidUnchecked unbinds every recorded binding of one of userID's
// 3PIDs without the policy (an administrator's removal), like UnbindAll.
func (s *Service) UnbindThreepidUnchecked(ctx context.Context, userID, medium, address string) (string, error) {
	return s.unbindRecorded(ctx, userID, func(b storage.Binding) bool { return b.Medium == medium && b.Address == address })
}

func (s *Service) unbindRecorded(ctx context.Context, userID string, match func(storage.Binding) bool) (string, error) {
	bs, err := s.Store.BindingsOf(ctx, userID)
	if err != nil {
		return "", fmt.Errorf("load bindings: %w", err)
	}
	result := threepid.UnbindSuccess
	for _, b := range bs {
		if !match(b) {
			continue
		}
		t, err := s.recordedServer(ctx, b)
		if err != nil {
			return "", err
		}
		if t == nil {
			result = threepid.UnbindNoSupport
			continue
		}
		r, err := s.unbindOne(ctx, userID, b.Medium, b.Address, *t, unbindMode{})
		if err != nil {
			return "", err
		}
		if r != threepid.UnbindSuccess {
			result = threepid.UnbindNoSupport
		}
	}
	return result, nil
}

// unbindJob is the payload of an unbind outbox item.
type unbindJob struct {
	UserID   string `json:"user_id"`
	Medium   string `json:"medium"`
	Address  string `json:"address"`
	IDServer string `json:"id_server"`
}

// unbindKey identifies the pending unbind of one binding (a hash: Postgres
// text cannot hold the NUL separators, and keys stay short).
func unbindKey(userID, medium, address, idServer string) string {
	sum := sha256.Sum256([]byte(userID + "\x00" + medium + "\x00" + address + "\x00" + idServer))
	return hex.EncodeToString(sum[:])
}

// Worker returns the outbox worker that retries queued unbinds. It gives up
// after seven days with a log line naming the identity server and the medium
// (never the address).
func (s *Service) Worker() *outbox.Worker {
	return &outbox.Worker{
		Store: s.Store,
		Kind:  OutboxKind,
		Do:    s.retry,
		// One unbind per identity server per pass, the identity servers side
		// by side, and a failing one deferred whole: an identity server that
		// is down (or hangs) costs one attempt per backoff and holds up no
		// other. A pass lasts at most one attempt (bounded by the identity
		// client's timeout), which always ends before the short lease: after
		// a crash, due unbinds are retried within 30 s.
		Grouped: true,
		Batch:   20,
		Lease:   25 * time.Second,
		OnGiveUp: outbox.LogGiveUp("unbind abandoned after the give-up age", func(j unbindJob) []any {
			return []any{"id_server", j.IDServer, "medium", j.Medium}
		}),
	}
}

func (s *Service) retry(ctx context.Context, item storage.OutboxItem) error {
	var job unbindJob
	if err := json.Unmarshal(item.Payload, &job); err != nil {
		return fmt.Errorf("decode unbind job: %w", err)
	}
	t, err := s.server(job.IDServer)
	if err != nil {
		return fmt.Errorf("identity server %s out of reach: %w", job.IDServer, err)
	}
	r := t.client.Unbind(ctx, t.is, job.UserID, job.Medium, job.Address)
	switch r.Outcome {
	case identity.Success, identity.NoSupport:
		return s.dropOwn(ctx, job.UserID, job.Medium, job.Address, job.IDServer)
	case identity.Refused:
		slog.WarnContext(ctx, "queued unbind refused by the outbound guard: binding record dropped", "id_server", job.IDServer, "medium", job.Medium, "detail", r.Detail)
		return s.forget(ctx, job.UserID, job.Medium, job.Address, job.IDServer)
	case identity.MatrixError:
		return fmt.Errorf("identity server %s refused the unbind: %s", job.IDServer, r.Detail)
	default:
		return fmt.Errorf("%w: %s", outbox.ErrRetry, r.Detail)
	}
}
