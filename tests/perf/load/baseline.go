package load

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/threepid"
)

// UserHeader carries the user ID to the baseline, which checks no access token.
const UserHeader = "X-Load-User"

// Baseline paths.
const (
	BaselineList         = "/list"
	BaselineRequestToken = "/request-token"
	BaselineSubmitToken  = "/submit-token"
	BaselineAdd          = "/add"
	BaselineBind         = "/bind"
	BaselineUnbind       = "/unbind"
	BaselineDelete       = "/delete"
	BaselineOnUpdate     = "/onupdate"
)

// Baseline is the yardstick threepidd is measured against: a bare net/http
// server whose handlers make, for each request, the store calls and
// transactions threepidd makes for the matching endpoint, and nothing else —
// no router or middleware, no access-token check (the user comes from
// UserHeader), no input validation beyond decoding JSON, no metrics, no
// calls to the homeserver, identity servers or SMTP server, no signatures.
// requestToken hands the token back in its answer instead of mailing it.
type Baseline struct {
	store storage.Store
	srv   *http.Server
	ln    net.Listener
	done  chan struct{}
}

// StartBaseline serves the baseline for store on an OS-chosen 127.0.0.1 port.
func StartBaseline(store storage.Store) (*Baseline, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("baseline: listen: %w", err)
	}
	b := &Baseline{store: store, ln: ln, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+BaselineList, b.handle(b.list))
	mux.HandleFunc("POST "+BaselineRequestToken, b.handle(b.requestToken))
	mux.HandleFunc("POST "+BaselineSubmitToken, b.handle(b.submitToken))
	mux.HandleFunc("POST "+BaselineAdd, b.handle(b.add))
	mux.HandleFunc("POST "+BaselineBind, b.handle(b.bind))
	mux.HandleFunc("POST "+BaselineUnbind, b.handle(b.unbind))
	mux.HandleFunc("POST "+BaselineDelete, b.handle(b.delete))
	mux.HandleFunc("POST "+BaselineOnUpdate, b.handle(b.onUpdate))
	b.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(b.done)
		_ = b.srv.Serve(ln) // ErrServerClosed after Close
	}()
	return b, nil
}

// URL is the baseline's base URL.
func (b *Baseline) URL() string { return "http://" + b.ln.Addr().String() }

// Close stops the server (the store stays open).
func (b *Baseline) Close() error {
	err := b.srv.Close()
	<-b.done
	return err
}

// maxBaselineBody bounds a request body, as threepidd does.
const maxBaselineBody = 64 << 10

// errRefused is a request the baseline answers with 400: the state did not
// allow it (where threepidd would answer a Matrix error).
var errRefused = errors.New("refused")

// baselineHandler serves one baseline endpoint: body is the request body (nil
// for a GET), user the UserHeader; the answer is encoded as JSON.
type baselineHandler func(ctx context.Context, user string, body []byte) (any, error)

// handle reads the body, runs fn and writes its answer: 200 and JSON, 400 for
// errRefused or a body that does not decode, 500 otherwise.
func (b *Baseline) handle(fn baselineHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		if r.Method == http.MethodPost {
			var err error
			if body, err = io.ReadAll(io.LimitReader(r.Body, maxBaselineBody)); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		answer, err := fn(r.Context(), r.Header.Get(UserHeader), body)
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.Is(err, errRefused), errors.As(err, &syntax), errors.As(err, &typ):
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		case err != nil:
			slog.ErrorContext(r.Context(), "baseline request failed", "path", r.URL.Path, "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answer)
	}
}

// baselineThreepid is an entry of the list answer, as GET /account/3pid has it.
type baselineThreepid struct {
	Medium      string `json:"medium"`
	Address     string `json:"address"`
	ValidatedAt int64  `json:"validated_at"`
	AddedAt     int64  `json:"added_at"`
}

// list answers the user's 3PIDs: one AssociationsOf.
func (b *Baseline) list(ctx context.Context, user string, _ []byte) (any, error) {
	as, err := b.store.AssociationsOf(ctx, user)
	if err != nil {
		return nil, err
	}
	out := make([]baselineThreepid, 0, len(as))
	for _, a := range as {
		out = append(out, baselineThreepid{Medium: a.Medium, Address: a.Address, ValidatedAt: a.ValidatedAt, AddedAt: a.AddedAt})
	}
	return map[string]any{"threepids": out}, nil
}

// BaselineToken is the answer of the baseline's requestToken: the session and
// the token threepidd would have mailed.
type BaselineToken struct {
	SID   string `json:"sid"`
	Token string `json:"token,omitempty"`
}

// requestToken takes {client_secret, email, send_attempt}: the owner lookup,
// the session lookup and the session insert of threepidd's requestToken.
func (b *Baseline) requestToken(ctx context.Context, _ string, body []byte) (any, error) {
	var req struct {
		ClientSecret string `json:"client_secret"`
		Email        string `json:"email"`
		SendAttempt  int64  `json:"send_attempt"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	if _, err := b.store.AssociationByAddress(ctx, threepid.MediumEmail, req.Email); err == nil {
		return nil, fmt.Errorf("%w: address in use", errRefused)
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if s, err := b.store.SessionByKey(ctx, req.ClientSecret, threepid.MediumEmail, req.Email); err == nil {
		return BaselineToken{SID: s.SID}, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	now := time.Now()
	tok := BaselineToken{SID: threepid.NewSID(), Token: threepid.NewEmailToken()}
	expires := now.Add(time.Hour).UnixMilli()
	err := b.store.CreateSession(ctx, storage.Session{
		SID: tok.SID, ClientSecret: req.ClientSecret, Medium: threepid.MediumEmail, Address: req.Email,
		SendAttempt: req.SendAttempt, ExpiresAt: expires, CreatedAt: now.UnixMilli(),
	}, storage.SessionToken{SID: tok.SID, TokenHash: threepid.HashToken(tok.Token), SendAttempt: req.SendAttempt, ExpiresAt: expires})
	if err != nil {
		return nil, err
	}
	return tok, nil
}

// session loads sid and checks its client secret, as submit_token and /add do.
func (b *Baseline) session(ctx context.Context, sid, clientSecret string) (storage.Session, error) {
	s, err := b.store.SessionByID(ctx, sid)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !threepid.TokenMatches(threepid.HashToken(s.ClientSecret), clientSecret)) {
		return s, fmt.Errorf("%w: unknown session", errRefused)
	}
	return s, err
}

// submitToken takes {sid, client_secret, token}: the session and token
// lookups, the attempt count and the update of threepidd's submit_token.
func (b *Baseline) submitToken(ctx context.Context, _ string, body []byte) (any, error) {
	var req struct {
		SID          string `json:"sid"`
		ClientSecret string `json:"client_secret"`
		Token        string `json:"token"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	s, err := b.session(ctx, req.SID, req.ClientSecret)
	if err != nil {
		return nil, err
	}
	tokens, err := b.store.SessionTokens(ctx, req.SID)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(tokens, func(t storage.SessionToken) bool { return threepid.TokenMatches(t.TokenHash, req.Token) })
	if s.ValidatedAt != 0 && i >= 0 {
		return map[string]bool{"success": true}, nil
	}
	now := time.Now()
	counted, err := b.store.RecordTokenAttempt(ctx, s.Medium, s.Address, now.UnixMilli(),
		storage.AttemptLimit{Since: now.Add(-time.Hour).UnixMilli(), Max: 5}, storage.AttemptLimit{Since: now.Add(-24 * time.Hour).UnixMilli(), Max: 10})
	if err != nil {
		return nil, err
	}
	if !counted || i < 0 {
		return nil, fmt.Errorf("%w: wrong token", errRefused)
	}
	if err := b.store.ValidateSession(ctx, req.SID, tokens[i].TokenHash, now.UnixMilli()); err != nil {
		return nil, err
	}
	return map[string]bool{"success": true}, nil
}

// add takes {sid, client_secret}: the session lookup, then one transaction
// spending the session and inserting the association, as threepidd's /add.
func (b *Baseline) add(ctx context.Context, user string, body []byte) (any, error) {
	var req struct {
		SID          string `json:"sid"`
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	s, err := b.session(ctx, req.SID, req.ClientSecret)
	if err != nil {
		return nil, err
	}
	if s.ValidatedAt == 0 {
		return nil, fmt.Errorf("%w: not validated", errRefused)
	}
	err = b.store.WithTx(ctx, func(q storage.Querier) error {
		spent, err := q.DeleteSession(ctx, req.SID)
		if err != nil {
			return err
		}
		if !spent {
			return fmt.Errorf("%w: session already used", errRefused)
		}
		err = q.InsertAssociation(ctx, storage.Association{
			UserID: user, Medium: s.Medium, Address: s.Address, ValidatedAt: s.ValidatedAt, AddedAt: time.Now().UnixMilli(),
		})
		if errors.Is(err, storage.ErrConflict) {
			return fmt.Errorf("%w: address in use", errRefused)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// bindingBody is the body of the baseline's bind and unbind.
type bindingBody struct {
	Medium   string `json:"medium"`
	Address  string `json:"address"`
	IDServer string `json:"id_server"`
}

// bind takes {medium, address, id_server}: the transaction of threepidd's
// /3pid/bind once the identity server has answered (other local holders lose
// the binding and are notified; the user's binding is recorded).
func (b *Baseline) bind(ctx context.Context, user string, body []byte) (any, error) {
	var req bindingBody
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	err := b.store.WithTx(ctx, func(q storage.Querier) error {
		previous, err := q.BindingsOf3PID(ctx, req.Medium, req.Address, req.IDServer)
		if err != nil {
			return err
		}
		for _, p := range previous {
			if p.UserID != user {
				if _, err := (&bindings.Service{}).Lose(ctx, q, bindings.Loss{Binding: p, Deleted: false, MXID: user, Origin: req.IDServer, At: now}); err != nil {
					return err
				}
			}
		}
		return q.UpsertBinding(ctx, storage.Binding{UserID: user, Medium: req.Medium, Address: req.Address, IDServer: req.IDServer, BoundAt: now})
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// unbind takes {medium, address, id_server}: the transaction of threepidd's
// /3pid/unbind once the identity server has answered.
func (b *Baseline) unbind(ctx context.Context, user string, body []byte) (any, error) {
	var req bindingBody
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	err := b.store.WithTx(ctx, func(q storage.Querier) error {
		_, err := q.DeleteBinding(ctx, user, req.Medium, req.Address, req.IDServer)
		return err
	})
	if err != nil {
		return nil, err
	}
	return map[string]string{"id_server_unbind_result": "success"}, nil
}

// delete takes {medium, address}: threepidd's /3pid/delete without identity
// servers to call: the lookup of the address's bindings, then the
// transaction removing it.
func (b *Baseline) delete(ctx context.Context, user string, body []byte) (any, error) {
	var req bindingBody
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	if _, err := b.store.BindingsOf3PID(ctx, req.Medium, req.Address, ""); err != nil {
		return nil, err
	}
	err := b.store.WithTx(ctx, func(q storage.Querier) error {
		removed, err := q.DeleteAssociation(ctx, user, req.Medium, req.Address)
		if err == nil && !removed {
			err = fmt.Errorf("%w: %s not held", errRefused, req.Address)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return map[string]string{"id_server_unbind_result": "no-support"}, nil
}

// BaselineOnUpdateBody is the body of the baseline's onupdate: threepidd's,
// plus the identity server that threepidd reads from the signed header.
type BaselineOnUpdateBody struct {
	Origin   string `json:"origin"`
	Threepid string `json:"threepid"`
	Medium   string `json:"medium"`
	Deleted  bool   `json:"deleted"`
	MXID     string `json:"mxid"`
}

// onUpdate takes a BaselineOnUpdateBody: the one transaction of threepidd's
// onupdate (remember the request, drop and notify the bindings lost).
func (b *Baseline) onUpdate(ctx context.Context, _ string, body []byte) (any, error) {
	var req BaselineOnUpdateBody
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	now := time.Now().UnixMilli()
	err := b.store.WithTx(ctx, func(q storage.Querier) error {
		fresh, err := q.RememberRequest(ctx, hex.EncodeToString(sum[:]), now)
		if err != nil || !fresh {
			return err
		}
		recorded, err := q.BindingsOf3PID(ctx, req.Medium, req.Threepid, req.Origin)
		if err != nil {
			return err
		}
		for _, r := range recorded {
			if req.Deleted && (req.MXID == "" || req.MXID == r.UserID) || !req.Deleted && req.MXID != r.UserID {
				if _, err := (&bindings.Service{}).Lose(ctx, q, bindings.Loss{Binding: r, Deleted: req.Deleted, MXID: req.MXID, Origin: req.Origin, At: now}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
