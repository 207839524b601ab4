package account

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/threepid"
)

// Threepid is an entry of GET /account/3pid (and of the admin API's listing).
type Threepid struct {
	Medium      string `json:"medium"`
	Address     string `json:"address"`
	ValidatedAt int64  `json:"validated_at"`
	AddedAt     int64  `json:"added_at"`
}

// Threepids renders associations as GET /account/3pid lists them.
func Threepids(as []storage.Association) []Threepid {
	out := make([]Threepid, 0, len(as))
	for _, x := range as {
		out = append(out, Threepid{Medium: x.Medium, Address: x.Address, ValidatedAt: x.ValidatedAt, AddedAt: x.AddedAt})
	}
	return out
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

// RemoveThreepid is an administrator's removal of (medium, address) from
// userID's account: it unbinds the 3PID from the identity servers it is
// recorded on, then removes it, without asking the policy; 404 M_NOT_FOUND if
// userID does not hold it.
func (s *Service) RemoveThreepid(ctx context.Context, userID, medium, address string) error {
	if owner, err := s.Owner(ctx, medium, address); err != nil || owner != userID {
		if err == nil || errors.Is(err, mxerr.NotFound) {
			return mxerr.NotFound.WithMessage("The user does not hold that 3PID")
		}
		return err
	}
	if s.Unbinder != nil {
		result, err := s.Unbinder.UnbindThreepidUnchecked(ctx, userID, medium, address)
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
// "no-support" otherwise. Running it again finds nothing left.
func (s *Service) DeactivateUser(ctx context.Context, userID string) (string, error) {
	result := threepid.UnbindSuccess
	if s.Unbinder != nil {
		var err error
		if result, err = s.Unbinder.UnbindAll(ctx, userID); err != nil {
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
	if !removed {
		return false, nil
	}
	return true, s.applied(ctx, q, policy.Change{Callback: policy.CallbackUserThreepid, Op: policy.OpRemove,
		UserID: userID, Medium: medium, Address: address})
}
