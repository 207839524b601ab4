package account

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/tidwall/sjson"

	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/outbox"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/threepid"
)

// DeactivateKind is the outbox kind of cleanups after a deactivation.
const DeactivateKind = "deactivate"

// Timing of a deactivation.
const (
	// RelayTimeout bounds the homeserver's deactivation: it unbinds the
	// identity servers it knows of before answering.
	RelayTimeout = 2 * time.Minute
	// CleanupTimeout bounds the inline cleanup.
	CleanupTimeout = time.Minute
	// grace is how long a queued cleanup waits before the worker may run it,
	// so that it does not race the inline attempt.
	grace = CleanupTimeout + 30*time.Second
)

// deactivateJob is the payload of a cleanup item.
type deactivateJob struct {
	UserID string `json:"user_id"`
	// Verify: the homeserver's answer was lost; clean up only if the admin
	// API shows the account deactivated.
	Verify bool `json:"verify,omitempty"`
}

// Deactivate relays a client's POST /account/deactivate (path and body as
// the client sent them) for userID, the owner of caller's token, and returns
// the status and body to answer.
//
// The request reaches the homeserver unchanged (body, user-interactive auth,
// the client's token and forwarded headers), so the homeserver runs its own
// auth and deactivation. Any answer but 200 goes back to the client as is:
// UIA 401s, 403s, and on a client's retry after success the homeserver's 401
// M_UNKNOWN_TOKEN or M_USER_DEACTIVATED. The caller learns whose account it is
// (whoami) before relaying, because the token dies with the account.
//
// On the homeserver's 200, a durable cleanup item is queued first, then the
// cleanup runs inline ([Service.DeactivateUser]: unbind everything, remove
// every 3PID, firing the after-events) and the item is dropped once that
// succeeded. If the inline cleanup fails or threepidd stops midway, the
// outbox worker finishes it: the client cannot, as its token is gone. The
// answer is the homeserver's body with id_server_unbind_result "success" only
// if both the homeserver and threepidd said "success" (a homeserver answer
// without the field counts as not success), "no-support" otherwise.
//
// When the homeserver's answer is lost (unreachable, timeout, 5xx), the
// account may or may not be deactivated. With HomeserverAdmin set, a cleanup
// item that first checks the account's state is queued; without it a warning
// asks the operator to check and use the admin API's deactivate.
//
// Neither the relay nor the cleanup stops when the client goes away: the
// homeserver may act on the request anyway.
func (s *Service) Deactivate(ctx context.Context, caller homeserver.Caller, userID, path string, body []byte) (int, []byte, error) {
	ctx = context.WithoutCancel(ctx)
	relayCtx, cancel := context.WithTimeout(ctx, RelayTimeout)
	status, resp, err := s.Homeserver.Forward(relayCtx, caller, http.MethodPost, path, body)
	cancel()
	if err != nil || status >= 500 {
		s.outcomeUnknown(ctx, userID, status, err)
		return status, resp, err
	}
	if status != http.StatusOK {
		return status, resp, nil
	}
	slog.InfoContext(ctx, "homeserver deactivated an account; removing its 3PIDs", "user_id", userID)
	if err := s.queue(ctx, deactivateJob{UserID: userID}); err != nil {
		// The inline attempt below still runs; only a crash now would lose it.
		slog.ErrorContext(ctx, "could not queue the cleanup after a deactivation", "user_id", userID, "err", err)
	}
	result := s.cleanUp(ctx, userID)
	return status, withUnbindResult(resp, result), nil
}

// cleanUp runs the cleanup inline and, once it succeeded, drops the queued
// item. A failure leaves the item to the worker and answers no-support.
func (s *Service) cleanUp(ctx context.Context, userID string) string {
	ctx, cancel := context.WithTimeout(ctx, CleanupTimeout)
	defer cancel()
	result, err := s.DeactivateUser(ctx, userID)
	if err != nil {
		slog.WarnContext(ctx, "cleanup after a deactivation failed; the outbox will finish it", "user_id", userID, "err", err)
		return threepid.UnbindNoSupport
	}
	items, err := s.Store.PendingOutbox(ctx, DeactivateKind, userID)
	if err != nil {
		slog.WarnContext(ctx, "could not list the queued cleanup; the worker will repeat it", "user_id", userID, "err", err)
		return result
	}
	for _, item := range items {
		if err := s.Store.DeleteOutbox(ctx, item.ID); err != nil && !errors.Is(err, storage.ErrNotFound) {
			slog.WarnContext(ctx, "could not drop the queued cleanup; the worker will repeat it", "user_id", userID, "err", err)
		}
	}
	return result
}

// outcomeUnknown handles a lost homeserver answer: the account may have been
// deactivated.
func (s *Service) outcomeUnknown(ctx context.Context, userID string, status int, err error) {
	if s.HomeserverAdmin == nil {
		slog.WarnContext(ctx, "the homeserver's answer to a deactivation was lost; if the account is deactivated, "+
			"remove its 3PIDs with POST /_threepidd/admin/v1/users/{userId}/deactivate",
			"user_id", userID, "status", status, "err", err)
		return
	}
	if qerr := s.queue(ctx, deactivateJob{UserID: userID, Verify: true}); qerr != nil {
		slog.ErrorContext(ctx, "could not queue the check after a lost deactivation answer", "user_id", userID, "err", qerr)
	}
}

// queue stores a cleanup item for j.UserID, due after the grace period. One
// item per user is pending at a time (the key is the user ID).
func (s *Service) queue(ctx context.Context, j deactivateJob) error {
	return outbox.Enqueue(ctx, s.Store, DeactivateKind, j.UserID, j, s.Clock.Now().Add(grace))
}

// withUnbindResult returns the homeserver's body with id_server_unbind_result
// set to success only if the homeserver said success and so did threepidd.
func withUnbindResult(body []byte, ours string) []byte {
	var hs struct {
		Result string `json:"id_server_unbind_result"`
	}
	if json.Unmarshal(body, &hs) != nil {
		body = []byte("{}")
	}
	combined := threepid.UnbindNoSupport
	if hs.Result == threepid.UnbindSuccess && ours == threepid.UnbindSuccess {
		combined = threepid.UnbindSuccess
	}
	out, err := sjson.SetBytes(body, "id_server_unbind_result", combined)
	if err != nil {
		out, _ = json.Marshal(map[string]string{"id_server_unbind_result": combined})
	}
	return out
}

// DeactivateWorker returns the outbox worker that finishes queued cleanups
// after deactivations.
func (s *Service) DeactivateWorker() *outbox.Worker {
	return &outbox.Worker{
		Store: s.Store,
		Kind:  DeactivateKind,
		Do:    s.finishDeactivation,
		Batch: 1,
		Lease: CleanupTimeout + 30*time.Second,
		OnGiveUp: outbox.LogGiveUp("cleanup after a deactivation abandoned after the give-up age", func(j deactivateJob) []any {
			return []any{"user_id", j.UserID}
		}),
	}
}

func (s *Service) finishDeactivation(ctx context.Context, item storage.OutboxItem) error {
	var j deactivateJob
	if err := json.Unmarshal(item.Payload, &j); err != nil {
		return fmt.Errorf("decode deactivation cleanup: %w", err)
	}
	if j.Verify {
		if s.HomeserverAdmin == nil {
			return fmt.Errorf("cannot check whether %s is deactivated: no homeserver admin API", j.UserID)
		}
		u, err := s.HomeserverAdmin.User(ctx, j.UserID)
		switch {
		case errors.Is(err, homeserver.ErrUserNotFound):
			return nil
		case homeserver.TemporaryAdminError(err):
			return fmt.Errorf("%w: %v", outbox.ErrRetry, err)
		case err != nil:
			return err
		case !u.Deactivated:
			slog.InfoContext(ctx, "the account is still active after a lost deactivation answer; nothing removed", "user_id", j.UserID)
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, CleanupTimeout)
	defer cancel()
	result, err := s.DeactivateUser(ctx, j.UserID)
	if err != nil {
		return fmt.Errorf("%w: %v", outbox.ErrRetry, err)
	}
	slog.InfoContext(ctx, "removed the 3PIDs of a deactivated account", "user_id", j.UserID, "id_server_unbind_result", result)
	return nil
}
