// Package onupdate is the 3PID onupdate proposal: an identity server tells
// the homeserver that a binding was taken over or deleted, with a signed
// POST /_matrix/federation/v1/3pid/onupdate. It holds the wire form ([Body],
// [Parse]), the sender an identity server (or threepidd notify) uses
// ([Send]), and the service that applies an update ([Service.Apply]): the
// binding records of local users who lost the 3PID are dropped and each of
// them gets a notification in their 3PID stream, in one transaction, at most
// once per signed request. The endpoint itself is federationapi's.
package onupdate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/internal/clock"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/threepid"
)

// Path is the federation endpoint of the proposal.
const Path = "/_matrix/federation/v1/3pid/onupdate"

// MaxBody bounds an onupdate body (DESIGN.md: 64 KiB).
const MaxBody = 64 << 10

// Body is the wire form of an update, as an identity server sends it.
type Body struct {
	Threepid string `json:"threepid"`
	Medium   string `json:"medium,omitempty"`
	Deleted  bool   `json:"deleted"`
	MXID     string `json:"mxid,omitempty"`
	// TS is when the identity server made the update, in milliseconds since
	// the epoch; 0 leaves it out (docs/onupdate-ts.md).
	TS int64 `json:"ts,omitempty"`
}

// Update is a parsed, canonical onupdate body.
type Update struct {
	Medium  string
	Address string
	Deleted bool
	// MXID is empty for a deletion that names nobody.
	MXID string
	// TS is the update's signed ts (ms since the epoch), 0 when it has none.
	TS int64
}

// Service applies updates to the store.
type Service struct {
	Store storage.Store
	// Bindings applies each loss (record, notification, after-events).
	Bindings *bindings.Service
	// MaxAge is how old an update's ts may be (onupdate.max_age; 0: the
	// default, 10 minutes).
	MaxAge time.Duration
	// ClockSkew is how far in the future an update's ts may be
	// (onupdate.clock_skew; 0: none).
	ClockSkew time.Duration
	Clock     clock.Func
}

// Result says what an update did.
type Result struct {
	// Replay is true when the same signed request was applied before.
	Replay bool
	// Notified lists the local users who lost a binding.
	Notified []string
}

// Apply applies u, sent by identity server is with the given raw body, in one
// transaction. The replay identity is the identity server and the canonical
// JSON of the body, which is what its signature covers: the same signed update
// reformatted (keys reordered, spaces added) is the same request, and a replay
// changes nothing. An update with a ts is refused (400 M_INVALID_PARAM) when
// that ts is older than MaxAge or further in the future than ClockSkew, and
// it only applies to the bindings recorded at or before ts; a genuine repeat
// carries a new ts and so is a new request.
func (s *Service) Apply(ctx context.Context, is config.IdentityServer, body []byte, u Update) (Result, error) {
	now := s.Clock.Now()
	if err := s.checkTS(u.TS, now); err != nil {
		return Result{}, err
	}
	canonical, err := gomatrixserverlib.CanonicalJSON(body)
	if err != nil {
		return Result{}, mxerr.BadJSON.WithMessage("Content is not canonical JSON")
	}
	sum := sha256.Sum256(append([]byte(is.ServerName+"\x00"), canonical...))
	var res Result
	err = s.Store.WithTx(ctx, func(q storage.Querier) error {
		res = Result{}
		fresh, err := q.RememberRequest(ctx, hex.EncodeToString(sum[:]), now.UnixMilli())
		if err != nil {
			return fmt.Errorf("remember onupdate: %w", err)
		}
		if !fresh {
			res.Replay = true
			return nil
		}
		recorded, err := q.BindingsOf3PID(ctx, u.Medium, u.Address, is.ServerName)
		if err != nil {
			return fmt.Errorf("load bindings: %w", err)
		}
		for _, b := range recorded {
			if !lost(u, b) {
				continue
			}
			lost, err := s.Bindings.Lose(ctx, q, bindings.Loss{Binding: b, Deleted: u.Deleted, MXID: u.MXID, Origin: is.ServerName, At: now.UnixMilli()})
			if err != nil {
				return err
			}
			if lost {
				res.Notified = append(res.Notified, b.UserID)
			}
		}
		return nil
	})
	return res, err
}

// ErrStale is in the error of an update whose ts is outside the accepted
// window (with a 400 M_INVALID_PARAM for the identity server).
var ErrStale = errors.New("onupdate: ts outside the accepted window")

// checkTS refuses a ts outside [now - MaxAge, now + ClockSkew]; 0 (no ts)
// passes.
func (s *Service) checkTS(ts int64, now time.Time) error {
	if ts == 0 {
		return nil
	}
	maxAge := s.MaxAge
	if maxAge <= 0 {
		maxAge = config.DefaultOnUpdateMaxAge
	}
	at := time.UnixMilli(ts)
	switch {
	case at.Before(now.Add(-maxAge)):
		return fmt.Errorf("%w: %w", ErrStale, mxerr.InvalidParam.WithMessage("ts is more than %v old", maxAge))
	case at.After(now.Add(s.ClockSkew)):
		return fmt.Errorf("%w: %w", ErrStale, mxerr.InvalidParam.WithMessage("ts is in the future"))
	}
	return nil
}

// lost reports whether the local user holding binding b lost it by u: a
// deletion naming them (or naming nobody), or a takeover by someone else;
// when u says when it was made (ts), only a binding recorded at or before then.
func lost(u Update, b storage.Binding) bool {
	if u.TS != 0 && b.BoundAt > u.TS {
		return false
	}
	if u.Deleted {
		return u.MXID == "" || u.MXID == b.UserID
	}
	return u.MXID != b.UserID
}

// wireBody is Body as read: pointers tell absent from zero.
type wireBody struct {
	Threepid *string `json:"threepid"`
	Medium   *string `json:"medium"`
	Deleted  *bool   `json:"deleted"`
	MXID     *string `json:"mxid"`
	TS       *int64  `json:"ts"`
}

// Parse checks an onupdate body: threepid and deleted present (400
// M_MISSING_PARAM otherwise), deleted a boolean, mxid a valid user ID (400
// M_INVALID_PARAM) and required for updates, medium optional: "email" or
// "msisdn", inferred when absent (contains "@": email; digits: msisdn), ts
// optional: a positive integer (M_BAD_JSON for another type, M_INVALID_PARAM
// for 0 or less; null is absent). The address is canonical.
func Parse(data []byte) (Update, error) {
	var b wireBody
	if err := mxerr.UnmarshalObject(data, &b); err != nil {
		return Update{}, err
	}
	if err := mxerr.Required("threepid", b.Threepid != nil, "deleted", b.Deleted != nil); err != nil {
		return Update{}, err
	}
	u := Update{Deleted: *b.Deleted}
	if b.TS != nil {
		if *b.TS <= 0 {
			return Update{}, mxerr.InvalidParam.WithMessage("ts must be a positive number of milliseconds since the epoch")
		}
		u.TS = *b.TS
	}
	if b.MXID != nil && (*b.MXID != "" || !u.Deleted) {
		if !threepid.ValidUserID(*b.MXID) {
			return Update{}, mxerr.InvalidParam.WithMessage("mxid is not a valid user ID")
		}
		u.MXID = *b.MXID
	}
	if !u.Deleted && u.MXID == "" {
		return Update{}, mxerr.MissingParam.WithMessage("Missing parameter: mxid (required when deleted is false)")
	}
	address := strings.TrimSpace(*b.Threepid)
	medium := threepid.InferMedium(address)
	if b.Medium != nil {
		medium = *b.Medium
		if medium != threepid.MediumEmail && medium != threepid.MediumMSISDN {
			return Update{}, mxerr.InvalidParam.WithMessage("medium must be email or msisdn")
		}
	}
	canonical, err := threepid.CanonicalAddress(medium, address)
	if err != nil {
		return Update{}, mxerr.InvalidParam.WithMessage("threepid is not a valid email or msisdn address")
	}
	u.Medium, u.Address = medium, canonical
	return u, nil
}
