// Package account is the service behind the 3PIDs of accounts: the
// validation sessions (requestToken, submit_token), adding a validated 3PID to
// an account, listing and deleting; an administrator's lookups and removals;
// and deactivation (relayed to the homeserver, then everything threepidd
// holds for the account goes). Handlers in clientapi and adminapi parse
// requests and call it; tests call it without HTTP.
package account

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net/url"
	"strings"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/delivery"
	"github.com/threepidd/threepidd/events"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/internal/clock"
	"github.com/threepidd/threepidd/metrics"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/threepid"
)

// MaxLiveTokens is how many tokens of one session are accepted at once: a
// resend adds a token and keeps the earlier ones until each expires, up to
// the newest MaxLiveTokens. It bounds what one guess of an SMS code is
// compared with (see Limits).
const MaxLiveTokens = 3

// Limits are the lifetimes of validation sessions and the limits on
// guessing their tokens (DESIGN.md, "Validation"; config keys
// email.token_lifetime, msisdn.token_lifetime, validated_session_lifetime,
// ratelimit.token_attempts_per_lifetime and ratelimit.token_attempts_per_day).
// A zero field takes the config default.
type Limits struct {
	EmailTokenLifetime  time.Duration
	MSISDNTokenLifetime time.Duration
	// ValidatedSessionLifetime is how long a validated session can still be spent by /add.
	ValidatedSessionLifetime time.Duration
	// AttemptsPerLifetime bounds the tokens submitted for one 3PID, across
	// its sessions and their resends, within one token lifetime of its
	// medium; AttemptsPerDay within 24 hours.
	AttemptsPerLifetime, AttemptsPerDay int
}

// withDefaults fills the zero fields of l with the config defaults.
func (l Limits) withDefaults() Limits {
	set := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	set(&l.EmailTokenLifetime, config.DefaultEmailTokenLifetime)
	set(&l.MSISDNTokenLifetime, config.DefaultMSISDNTokenLifetime)
	set(&l.ValidatedSessionLifetime, config.DefaultValidatedSessionLifetime)
	if l.AttemptsPerLifetime == 0 {
		l.AttemptsPerLifetime = config.DefaultTokenAttemptsPerLifetime
	}
	if l.AttemptsPerDay == 0 {
		l.AttemptsPerDay = config.DefaultTokenAttemptsPerDay
	}
	return l
}

// TokenLifetime is how long a token of medium works.
func (l Limits) TokenLifetime(medium string) time.Duration {
	l = l.withDefaults()
	if medium == threepid.MediumEmail {
		return l.EmailTokenLifetime
	}
	return l.MSISDNTokenLifetime
}

// AttemptWindow is the window of Limits.AttemptsPerDay; attempts older than
// it count for nothing.
const AttemptWindow = 24 * time.Hour

// Submit paths (Synapse's), relative to public_baseurl.
const (
	EmailSubmitPath  = "/_matrix/client/unstable/add_threepid/email/submit_token"
	MSISDNSubmitPath = "/_matrix/client/unstable/add_threepid/msisdn/submit_token"
)

// EmailSender sends a validation e-mail (delivery.Mailer).
type EmailSender interface {
	Send(ctx context.Context, m delivery.Message) error
}

// SMSSender sends a validation SMS through the gateway webhook.
type SMSSender interface {
	Send(ctx context.Context, to, token, text string) error
}

// Unbinder removes 3PIDs' bindings from identity servers (bindings.Service).
// Each method answers "success" or "no-support" (MSC1915).
type Unbinder interface {
	// UnbindOnDelete unbinds a 3PID the user deletes, as the user asked.
	UnbindOnDelete(ctx context.Context, userID, medium, address, idServer string) (string, error)
	// UnbindAll unbinds every binding recorded for userID, without the policy.
	UnbindAll(ctx context.Context, userID string) (string, error)
	// UnbindThreepidUnchecked unbinds one 3PID's recorded bindings, without the policy.
	UnbindThreepidUnchecked(ctx context.Context, userID, medium, address string) (string, error)
}

// Service implements the account 3PID operations.
type Service struct {
	Store         storage.Store
	Email         EmailSender // nil: e-mail not supported
	SMS           SMSSender   // nil: msisdn not supported
	PublicBaseURL string
	// ServerName is the homeserver's, named in validation mails.
	ServerName string
	// Templates render validation mails (nil: the built-in ones).
	Templates *delivery.Templates
	// Limits are the lifetimes and attempt limits of validation sessions.
	Limits Limits
	// NextLinkDomains are the hosts next_link may name (nil: any).
	NextLinkDomains []string
	// InhibitThreepidErrors makes requestToken for an address an account
	// holds answer as for a free one, sending nothing.
	InhibitThreepidErrors bool
	Policy                policy.Checker
	// MaxThreepidsPerUser limits /add (0: no limit).
	MaxThreepidsPerUser int
	Unbinder            Unbinder    // nil: nothing is unbound, delete answers no-support
	Events              events.Sink // nil: no after-events
	// Homeserver relays deactivations (nil: /account/deactivate is not served).
	Homeserver *homeserver.Client
	// HomeserverAdmin checks whether an account was deactivated when the
	// homeserver's answer to a relayed deactivation was lost; nil: not checked.
	HomeserverAdmin *homeserver.SynapseAdmin
	// Holders is asked, before an address is granted (requestToken, add),
	// who holds it in the homeserver's own 3PID table; nil: not asked.
	Holders Holders
	Clock   clock.Func
}

// Holders answers who holds a 3PID in the homeserver's own table
// (homeserver.SynapseAdmin): "" for nobody.
type Holders interface {
	ThreepidHolder(ctx context.Context, medium, address string) (string, error)
}

var (
	messagesSent = metrics.Factory.NewCounterVec(metrics.CounterOpts("validation_messages_sent_total",
		"Validation e-mails and SMS handed to the SMTP server or gateway."), []string{"medium"})
	messagesFailed = metrics.Factory.NewCounterVec(metrics.CounterOpts("validation_messages_failed_total",
		"Validation e-mails and SMS that could not be sent."), []string{"medium"})
	holderLookups = metrics.Factory.NewCounterVec(metrics.CounterOpts("homeserver_threepid_lookups_total",
		"Questions to the homeserver of who holds an address before threepidd grants it, by outcome: "+
			"free, same (the asking account), other (refused: M_THREEPID_IN_USE), error (refused: 502)."), []string{"outcome"})
)

func init() {
	// Every series exists from the start, at zero, for dashboards and rate().
	for _, medium := range []string{threepid.MediumEmail, threepid.MediumMSISDN} {
		messagesSent.WithLabelValues(medium)
		messagesFailed.WithLabelValues(medium)
	}
	for _, outcome := range []string{"free", "same", "other", "error"} {
		holderLookups.WithLabelValues(outcome)
	}
}

// TokenRequest is a requestToken call, already syntactically checked.
type TokenRequest struct {
	ClientSecret string
	Medium       string
	// Address is canonical.
	Address     string
	SendAttempt int64
	NextLink    string
}

// TokenResponse is the answer to requestToken.
type TokenResponse struct {
	SID       string `json:"sid"`
	SubmitURL string `json:"submit_url,omitempty"`
	// For a phone number, what Sydent answers and Synapse passes on, and
	// clients use to show the number (matrix-js-sdk's
	// IRequestMsisdnTokenResponse, Element's "text message sent to"): the
	// canonical digits, their international format, and success.
	MSISDN  string `json:"msisdn,omitempty"`
	IntlFmt string `json:"intl_fmt,omitempty"`
	Success bool   `json:"success,omitempty"`
}

// RequestToken starts (or continues) a validation session and sends a token.
// A send_attempt not above the session's last one returns the same sid and
// sends nothing; a higher one sends a new token for the same sid, and the
// earlier tokens stay valid until they expire. With InhibitThreepidErrors,
// an address an account holds gets a session like any other, whose token
// is never sent (as Synapse's request_token_inhibit_3pid_errors).
func (s *Service) RequestToken(ctx context.Context, req TokenRequest) (TokenResponse, error) {
	if err := s.mediumSupported(req.Medium); err != nil {
		return TokenResponse{}, err
	}
	if err := s.checkUserThreepid(ctx, "", req.Medium, req.Address, policy.OpAdd); err != nil {
		return TokenResponse{}, err
	}
	if req.NextLink != "" && !threepid.NextLinkAllowed(req.NextLink, s.NextLinkDomains) {
		return TokenResponse{}, mxerr.InvalidParam.WithMessage("next_link's domain is not allowed (email.next_link_domains_allowed), or it is not http(s)")
	}
	held := false
	if _, err := s.Store.AssociationByAddress(ctx, req.Medium, req.Address); err == nil {
		if !s.InhibitThreepidErrors {
			return TokenResponse{}, mxerr.ThreepidInUse
		}
		held = true
	} else if !errors.Is(err, storage.ErrNotFound) {
		return TokenResponse{}, fmt.Errorf("look up 3PID owner: %w", err)
	}
	if !held {
		// The homeserver may hold it too (its own registration, or our
		// mirror's copy); inhibited, that is as held as a row of ours.
		switch err := s.checkHomeserverHolder(ctx, "", req.Medium, req.Address); {
		case errors.Is(err, mxerr.ThreepidInUse) && s.InhibitThreepidErrors:
			held = true
		case err != nil:
			return TokenResponse{}, err
		}
	}
	resp := TokenResponse{}
	if req.Medium == threepid.MediumMSISDN {
		resp.SubmitURL = s.PublicBaseURL + MSISDNSubmitPath
		resp.MSISDN, resp.IntlFmt, resp.Success = req.Address, threepid.InternationalFormat(req.Address), true
	}
	now := s.Clock.Now()
	existing, release, err := s.claimSend(ctx, req, now)
	if err != nil {
		return TokenResponse{}, err
	}
	if release == nil { // an identical request sent it
		resp.SID = existing.SID
		return resp, nil
	}
	// Released whatever happens: once the session holds the attempt, an
	// identical request finds it; after a failure, a retry must send again.
	defer release()
	if existing.SID != "" {
		resp.SID = existing.SID
		token, err := s.sendToken(ctx, req, existing.SID, held, now)
		if err != nil {
			return TokenResponse{}, err
		}
		if err := s.Store.AddSessionToken(ctx, token, MaxLiveTokens); err != nil {
			return TokenResponse{}, fmt.Errorf("add session token: %w", err)
		}
		return resp, nil
	}
	sid := threepid.NewSID()
	// Send first: a session whose message never left must not swallow the
	// client's retry with the same send_attempt.
	token, err := s.sendToken(ctx, req, sid, held, now)
	if err != nil {
		return TokenResponse{}, err
	}
	err = s.Store.CreateSession(ctx, storage.Session{
		SID: sid, ClientSecret: req.ClientSecret, Medium: req.Medium, Address: req.Address,
		SendAttempt: req.SendAttempt, NextLink: req.NextLink, ExpiresAt: token.ExpiresAt, CreatedAt: now.UnixMilli(),
	}, token)
	if err != nil {
		return TokenResponse{}, fmt.Errorf("create session: %w", err)
	}
	resp.SID = sid
	return resp, nil
}

// Identical requestTokens (client_secret, 3PID, send_attempt), concurrent on
// one instance or several, send one message: the first claims the send in
// the store, the others wait for its session and answer its sid.
const (
	// sendClaimStale is the age past which a claim belongs to a request
	// that died while sending: longer than any send takes.
	sendClaimStale = 2 * time.Minute
	// sendClaimWait bounds how long a request waits for an identical one
	// that is sending; past it, the client is asked to try again.
	sendClaimWait = 30 * time.Second
	// sendClaimPoll is how often a waiting request looks again.
	sendClaimPoll = 20 * time.Millisecond
)

// claimSend returns the session of req's key (zero if none) and, when req
// must send its message, the function that releases the claim to send it.
// A nil release means an identical request already sent it: the session
// returned holds the attempt.
func (s *Service) claimSend(ctx context.Context, req TokenRequest, now time.Time) (storage.Session, func(), error) {
	key := threepid.HashToken(fmt.Sprintf("%s\x00%s\x00%s\x00%d", req.ClientSecret, req.Medium, req.Address, req.SendAttempt))
	deadline := time.Now().Add(sendClaimWait)
	for {
		existing, err := s.sessionByKey(ctx, req)
		if err != nil || (existing.SID != "" && req.SendAttempt <= existing.SendAttempt) {
			return existing, nil, err
		}
		got, err := s.Store.ClaimSend(ctx, key, now.UnixMilli(), now.Add(-sendClaimStale).UnixMilli())
		if err != nil {
			return storage.Session{}, nil, err
		}
		if got {
			release := func() {
				if err := s.Store.ReleaseSend(context.WithoutCancel(ctx), key); err != nil {
					slog.WarnContext(ctx, "release requestToken send claim", "err", err)
				}
			}
			// The holder before us may have stored its session and released
			// between our look and our claim.
			if existing, err = s.sessionByKey(ctx, req); err != nil || (existing.SID != "" && req.SendAttempt <= existing.SendAttempt) {
				release()
				return existing, nil, err
			}
			return existing, release, nil
		}
		if time.Now().After(deadline) {
			return storage.Session{}, nil, mxerr.Unavailable.WithMessage("The validation message is still being sent; try again later")
		}
		select {
		case <-ctx.Done():
			return storage.Session{}, nil, ctx.Err()
		case <-time.After(sendClaimPoll):
		}
	}
}

// sessionByKey is the session of req's key, or a zero Session when there is none.
func (s *Service) sessionByKey(ctx context.Context, req TokenRequest) (storage.Session, error) {
	existing, err := s.Store.SessionByKey(ctx, req.ClientSecret, req.Medium, req.Address)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return storage.Session{}, nil
	case err != nil:
		return storage.Session{}, fmt.Errorf("load session: %w", err)
	}
	return existing, nil
}

// sendToken makes a token for session sid and sends it, or, for an address
// an account holds (held), only takes about as long as sending does, so
// that neither the answer nor its timing tells the address is held.
func (s *Service) sendToken(ctx context.Context, req TokenRequest, sid string, held bool, now time.Time) (storage.SessionToken, error) {
	token := threepid.NewSMSCode()
	if req.Medium == threepid.MediumEmail {
		token = threepid.NewEmailToken()
	}
	t := storage.SessionToken{SID: sid, TokenHash: threepid.HashToken(token), SendAttempt: req.SendAttempt,
		ExpiresAt: now.Add(s.Limits.TokenLifetime(req.Medium)).UnixMilli()}
	if held {
		// Synapse waits 100 ms to 1 s.
		pause := time.NewTimer(100*time.Millisecond + time.Duration(mathrand.Int64N(int64(900*time.Millisecond))))
		defer pause.Stop()
		select {
		case <-pause.C:
		case <-ctx.Done():
			return t, ctx.Err()
		}
		return t, nil
	}
	return t, s.send(ctx, req, sid, token)
}

func (s *Service) mediumSupported(medium string) error {
	switch {
	case medium == threepid.MediumEmail && s.Email != nil, medium == threepid.MediumMSISDN && s.SMS != nil:
		return nil
	case medium == threepid.MediumEmail:
		return mxerr.ThreepidMediumNotSupported.WithMessage("This homeserver does not support adding e-mail addresses")
	default:
		return mxerr.ThreepidMediumNotSupported.WithMessage("This homeserver does not support adding phone numbers")
	}
}

func (s *Service) send(ctx context.Context, req TokenRequest, sid, token string) error {
	var err error
	if req.Medium == threepid.MediumEmail {
		err = s.sendMail(ctx, req, sid, token)
	} else {
		text := "Your Matrix validation code is " + token
		err = s.SMS.Send(ctx, req.Address, token, text)
	}
	if err != nil {
		messagesFailed.WithLabelValues(req.Medium).Inc()
		slog.ErrorContext(ctx, "validation message not sent", "medium", req.Medium, "err", err)
		return mxerr.Unavailable.WithMessage("The validation message could not be sent; try again later")
	}
	messagesSent.WithLabelValues(req.Medium).Inc()
	return nil
}

// sendMail sends the validation mail of token.
func (s *Service) sendMail(ctx context.Context, req TokenRequest, sid, token string) error {
	q := url.Values{"token": {token}, "client_secret": {req.ClientSecret}, "sid": {sid}}
	templates := s.Templates
	if templates == nil {
		templates = delivery.DefaultTemplates()
	}
	m, err := templates.Validation(delivery.ValidationMail{
		ServerName: s.ServerName, Address: req.Address,
		Link:     s.PublicBaseURL + EmailSubmitPath + "?" + q.Encode(),
		ValidFor: delivery.DurationInWords(s.Limits.TokenLifetime(req.Medium)),
	})
	if err != nil {
		return err
	}
	return s.Email.Send(ctx, m)
}

// SubmitToken checks a token for a session. On success the session is validated
// and the session's next_link is returned when next_link_domains_allowed
// allows it ("" otherwise).
func (s *Service) SubmitToken(ctx context.Context, medium, sid, clientSecret, token string) (string, error) {
	sess, err := s.session(ctx, medium, sid, clientSecret)
	if err != nil {
		return "", err
	}
	tokens, err := s.Store.SessionTokens(ctx, sid)
	if err != nil {
		return "", fmt.Errorf("load session tokens: %w", err)
	}
	var match *storage.SessionToken
	for i := range tokens {
		if threepid.TokenMatches(tokens[i].TokenHash, token) {
			match = &tokens[i]
		}
	}
	if sess.ValidatedAt != 0 && match != nil {
		return s.nextLink(sess), nil // a link opened again
	}
	// Every attempt is counted, per 3PID, before the token is compared: a
	// resend or a new session does not start the count again, and the store
	// serialises concurrent attempts, so that a burst cannot pass the limit
	// either. The right token counts too. A store failure refuses the
	// attempt.
	now := s.Clock.Now()
	limits := s.Limits.withDefaults()
	counted, err := s.Store.RecordTokenAttempt(ctx, sess.Medium, sess.Address, now.UnixMilli(),
		storage.AttemptLimit{Since: now.Add(-limits.TokenLifetime(sess.Medium)).UnixMilli(), Max: limits.AttemptsPerLifetime},
		storage.AttemptLimit{Since: now.Add(-AttemptWindow).UnixMilli(), Max: limits.AttemptsPerDay})
	if err != nil {
		return "", fmt.Errorf("count token attempt: %w", err)
	}
	if !counted {
		return "", mxerr.TokenIncorrect.WithMessage("Too many attempts for this address; try again later")
	}
	if match == nil {
		return "", mxerr.TokenIncorrect
	}
	if now.UnixMilli() > match.ExpiresAt {
		return "", mxerr.SessionExpired
	}
	if err := s.Store.ValidateSession(ctx, sid, match.TokenHash, now.UnixMilli()); err != nil {
		return "", fmt.Errorf("validate session: %w", err)
	}
	return s.nextLink(sess), nil
}

// session returns the validation session sid of medium whose client secret
// is clientSecret; anything else is M_INVALID_PARAM, one answer for every
// case, so that a wrong secret learns nothing about the session.
func (s *Service) session(ctx context.Context, medium, sid, clientSecret string) (storage.Session, error) {
	sess, err := s.Store.SessionByID(ctx, sid)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (!threepid.TokenMatches(threepid.HashToken(sess.ClientSecret), clientSecret) || sess.Medium != medium)) {
		return storage.Session{}, mxerr.InvalidParam.WithMessage("Unknown validation session")
	}
	if err != nil {
		return storage.Session{}, fmt.Errorf("load session: %w", err)
	}
	return sess, nil
}

// nextLink is sess's next_link when next_link_domains_allowed allows it now
// (it may have changed since requestToken), else "".
func (s *Service) nextLink(sess storage.Session) string {
	if sess.NextLink == "" || !threepid.NextLinkAllowed(sess.NextLink, s.NextLinkDomains) {
		return ""
	}
	return sess.NextLink
}

// LinkSession is what the page of a validation link shows before the
// person confirms.
type LinkSession struct {
	Medium, Address string
	// Validated: a token of the session was submitted already.
	Validated bool
	// NextLink is where the page goes once confirmed ("" for nowhere).
	NextLink string
}

// OpenLink looks up the session a validation link names, without checking
// its token (that is SubmitToken's, and counted): the page a link opens
// validates nothing. An unknown sid, or a client secret or medium that is
// not the session's, is M_INVALID_PARAM as in SubmitToken.
func (s *Service) OpenLink(ctx context.Context, medium, sid, clientSecret string) (LinkSession, error) {
	sess, err := s.session(ctx, medium, sid, clientSecret)
	if err != nil {
		return LinkSession{}, err
	}
	return LinkSession{Medium: sess.Medium, Address: sess.Address, Validated: sess.ValidatedAt != 0, NextLink: s.nextLink(sess)}, nil
}

// List returns a user's 3PIDs.
func (s *Service) List(ctx context.Context, userID string) ([]storage.Association, error) {
	as, err := s.Store.AssociationsOf(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("list 3PIDs: %w", err)
	}
	return as, nil
}

// Add spends a validated session and associates its 3PID with userID. The
// caller has already passed user-interactive auth. A session is spent once; a
// 3PID held by anyone is refused, never moved.
func (s *Service) Add(ctx context.Context, userID, sid, clientSecret string) error {
	sess, err := s.Store.SessionByID(ctx, sid)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !threepid.TokenMatches(threepid.HashToken(sess.ClientSecret), clientSecret)) {
		return mxerr.ThreepidAuthFailed.WithMessage("No validated session with that sid and client_secret")
	}
	if err != nil {
		return fmt.Errorf("load session: %w", err)
	}
	now := s.Clock.Now().UnixMilli()
	if sess.ValidatedAt == 0 {
		return mxerr.ThreepidAuthFailed.WithMessage("The 3PID has not been validated yet")
	}
	if now > sess.ValidatedAt+s.Limits.withDefaults().ValidatedSessionLifetime.Milliseconds() {
		return mxerr.ThreepidAuthFailed.WithMessage("The validation session has expired")
	}
	if err := s.checkUserThreepid(ctx, userID, sess.Medium, sess.Address, policy.OpAdd); err != nil {
		return err
	}
	if err := s.checkHomeserverHolder(ctx, userID, sess.Medium, sess.Address); err != nil {
		return err
	}
	return s.Store.WithTx(ctx, func(q storage.Querier) error {
		holder, err := q.AssociationByAddress(ctx, sess.Medium, sess.Address)
		switch {
		case err == nil && holder.UserID == userID:
			// Already on this account (a second session validated before the
			// first was used): only the session is spent; Synapse's upsert
			// answers 200 too.
			if _, err := q.DeleteSession(ctx, sid); err != nil {
				return fmt.Errorf("spend session: %w", err)
			}
			return nil
		case err == nil:
			return mxerr.ThreepidInUse
		case !errors.Is(err, storage.ErrNotFound):
			return fmt.Errorf("look up 3PID holder: %w", err)
		}
		if s.MaxThreepidsPerUser > 0 {
			// Two adds racing must not both pass the count.
			if err := q.LockUser(ctx, userID); err != nil {
				return err
			}
			n, err := q.CountAssociations(ctx, userID)
			if err != nil {
				return fmt.Errorf("count 3PIDs: %w", err)
			}
			if n >= s.MaxThreepidsPerUser {
				return mxerr.ThreepidDenied.WithMessage("Blocked by max_threepids_per_user: an account may hold at most %d 3PIDs", s.MaxThreepidsPerUser)
			}
		}
		spent, err := q.DeleteSession(ctx, sid)
		if err != nil {
			return fmt.Errorf("spend session: %w", err)
		}
		if !spent {
			return mxerr.ThreepidAuthFailed.WithMessage("The validation session was already used")
		}
		err = q.InsertAssociation(ctx, storage.Association{
			UserID: userID, Medium: sess.Medium, Address: sess.Address,
			ValidatedAt: sess.ValidatedAt, AddedAt: now,
		})
		if errors.Is(err, storage.ErrConflict) {
			return mxerr.ThreepidInUse
		}
		if err != nil {
			return fmt.Errorf("add 3PID: %w", err)
		}
		return s.applied(ctx, q, policy.Change{Callback: policy.CallbackUserThreepid, Op: policy.OpAdd,
			UserID: userID, Medium: sess.Medium, Address: sess.Address})
	})
}

// Delete removes a 3PID from userID's account and unbinds it from identity
// servers (MSC1915). It answers "success" or "no-support"; the local
// association is removed whatever the identity servers say.
func (s *Service) Delete(ctx context.Context, userID, medium, address, idServer string) (string, error) {
	if err := s.checkUserThreepid(ctx, userID, medium, address, policy.OpRemove); err != nil {
		var me *mxerr.Error
		if errors.As(err, &me) && me.ErrCode == mxerr.ThreepidDenied.ErrCode {
			return "", mxerr.Forbidden.WithMessage("%s", me.Message)
		}
		return "", err
	}
	result := threepid.UnbindNoSupport
	if s.Unbinder != nil {
		r, err := s.Unbinder.UnbindOnDelete(ctx, userID, medium, address, idServer)
		if err != nil {
			return "", err
		}
		result = r
	}
	err := s.Store.WithTx(ctx, func(q storage.Querier) error {
		_, err := s.remove(ctx, q, userID, medium, address)
		return err
	})
	if err != nil {
		return "", err
	}
	return result, nil
}

// checkHomeserverHolder asks the homeserver who holds (medium, address) in
// its own table: 400 M_THREEPID_IN_USE when an account other than userID
// does ("" at requestToken: any account). An address given at registration
// lives there until threepidd imports it, and granting it to another account
// would let the mirror move it on the homeserver. A homeserver that cannot
// answer refuses the grant (502): granting is the point of the question.
func (s *Service) checkHomeserverHolder(ctx context.Context, userID, medium, address string) error {
	if s.Holders == nil {
		return nil
	}
	holder, err := s.Holders.ThreepidHolder(ctx, medium, address)
	switch {
	case err != nil:
		holderLookups.WithLabelValues("error").Inc()
		slog.WarnContext(ctx, "could not ask the homeserver who holds an address; refused", "medium", medium, "err", err)
		return mxerr.Unavailable.WithMessage("The homeserver could not say whether the address is in use; try again later")
	case holder == "":
		holderLookups.WithLabelValues("free").Inc()
	case holder == userID:
		holderLookups.WithLabelValues("same").Inc()
	default:
		holderLookups.WithLabelValues("other").Inc()
		return mxerr.ThreepidInUse
	}
	return nil
}

// checkUserThreepid asks the policy; a block becomes 403 M_THREEPID_DENIED
// naming the rule.
func (s *Service) checkUserThreepid(ctx context.Context, userID, medium, address string, op policy.Op) error {
	if s.Policy == nil {
		return nil
	}
	d, err := s.Policy.CheckUserThreepid(ctx, policy.Change{Callback: policy.CallbackUserThreepid, Op: op,
		UserID: userID, Medium: medium, Address: address})
	if err != nil {
		return fmt.Errorf("policy check: %w", err)
	}
	if !d.Allow {
		return mxerr.ThreepidDenied.WithMessage("%s", d.Message())
	}
	return nil
}

func (s *Service) applied(ctx context.Context, q storage.Querier, c policy.Change) error {
	return events.Apply(ctx, s.Events, q, c)
}

// CanonicalRequestAddress canonicalises an address a client names in delete or
// unbind: M_INVALID_PARAM if it is not a valid address of that medium.
func CanonicalRequestAddress(medium, address string) (string, error) {
	if medium != threepid.MediumEmail && medium != threepid.MediumMSISDN {
		return "", mxerr.InvalidParam.WithMessage("medium must be email or msisdn")
	}
	a, err := threepid.CanonicalAddress(medium, strings.TrimSpace(address))
	if err != nil {
		return "", mxerr.InvalidParam.WithMessage("Invalid %s address", medium)
	}
	return a, nil
}
