// Package admin is threepidd's operator API under /_threepidd/admin/v1:
// looking up a user's 3PIDs and bindings and a 3PID's owner, removing a 3PID
// from an account, and deactivating a user (unbind everything, remove
// everything). Requests carry Authorization: Bearer <admin_token>; without an
// admin_token the API is off and its paths answer 404 M_UNRECOGNIZED.
//
// Administrators are never asked the policy, but their changes fire the
// after-events like any other. [Service.DeactivateUser] is also what the
// client-server /account/deactivate runs once the homeserver deactivated the
// account.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage"
)

// Service implements the admin operations without HTTP.
type Service struct {
	Store storage.Store
	// Bindings unbinds from identity servers; nil: nothing is unbound.
	Bindings *bindings.Service
	// Events receives the removals; nil: no after-events.
	Events bindings.Events
}

// UserThreepids returns userID's 3PIDs and identity-server bindings.
func (s *Service) UserThreepids(ctx context.Context, userID string) ([]storage.Association, []storage.Binding, error) {
	as, err := s.Store.AssociationsOf(ctx, userID)
	if err != nil {
		return nil, nil, fmt.Errorf("list 3PIDs: %w", err)
	}
	bs, err := s.Store.BindingsOf(ctx, userID)
	if err != nil {
		return nil, nil, fmt.Errorf("list bindings: %w", err)
	}
	return as, bs, nil
}

// Owner returns the user holding (medium, address), or 404 M_NOT_FOUND.
func (s *Service) Owner(ctx context.Context, medium, address string) (string, error) {
	a, err := s.Store.AssociationByAddress(ctx, medium, address)
	if errors.Is(err, storage.ErrNotFound) {
		return "", mxerr.NotFound.WithMessage("No user holds that 3PID")
	}
	if err != nil {
		return "", fmt.Errorf("look up 3PID owner: %w", err)
	}
	return a.UserID, nil
}

// RemoveThreepid removes (medium, address) from userID's account after
// unbinding it from the identity servers it is recorded on, without asking
// the policy; 404 M_NOT_FOUND if userID does not hold it.
func (s *Service) RemoveThreepid(ctx context.Context, userID, medium, address string) error {
	if owner, err := s.Owner(ctx, medium, address); err != nil || owner != userID {
		if err == nil || errors.Is(err, mxerr.NotFound) {
			return mxerr.NotFound.WithMessage("The user does not hold that 3PID")
		}
		return err
	}
	if s.Bindings != nil {
		result, err := s.Bindings.UnbindThreepidUnchecked(ctx, userID, medium, address)
		if err != nil {
			return fmt.Errorf("unbind: %w", err)
		}
		slog.InfoContext(ctx, "admin removed a 3PID", "medium", medium, "id_server_unbind_result", result)
	}
	var removed bool
	err := s.Store.WithTx(ctx, func(q storage.Querier) error {
		var err error
		removed, err = s.remove(ctx, q, userID, medium, address)
		return err
	})
	if err != nil {
		return err
	}
	if !removed {
		return mxerr.NotFound.WithMessage("The user does not hold that 3PID")
	}
	return nil
}

// DeactivateUser unbinds every binding recorded for userID (each tried inline,
// failures queued for retry) and removes all of userID's 3PIDs, without
// asking the policy. It answers "success" when every unbind succeeded and
// "no-support" otherwise.
func (s *Service) DeactivateUser(ctx context.Context, userID string) (string, error) {
	result := bindings.ResultSuccess
	if s.Bindings != nil {
		var err error
		if result, err = s.Bindings.UnbindAll(ctx, userID); err != nil {
			return "", fmt.Errorf("unbind all: %w", err)
		}
	}
	err := s.Store.WithTx(ctx, func(q storage.Querier) error {
		as, err := q.AssociationsOf(ctx, userID)
		if err != nil {
			return fmt.Errorf("list 3PIDs: %w", err)
		}
		for _, a := range as {
			if _, err := s.remove(ctx, q, userID, a.Medium, a.Address); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return result, nil
}

// remove deletes one association in q and queues its after-event.
func (s *Service) remove(ctx context.Context, q storage.Querier, userID, medium, address string) (bool, error) {
	removed, err := q.DeleteAssociation(ctx, userID, medium, address)
	if err != nil {
		return false, fmt.Errorf("delete 3PID: %w", err)
	}
	if !removed || s.Events == nil {
		return removed, nil
	}
	return true, s.Events.Applied(ctx, q, policy.Change{Callback: policy.CallbackUserThreepid, Op: policy.OpRemove,
		UserID: userID, Medium: medium, Address: address})
}
