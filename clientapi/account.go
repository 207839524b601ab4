package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/threepidd/threepidd/account"
	"github.com/threepidd/threepidd/auth"
	"github.com/threepidd/threepidd/httpapi"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/ratelimit"
	"github.com/threepidd/threepidd/threepid"
)

// Account serves the local 3PID endpoints of the client-server API.
type Account struct {
	Service *account.Service
	Auth    *auth.Auth
	// PerIP and PerAddress limit requestToken (nil: unlimited).
	PerIP, PerAddress *ratelimit.Limiter
	// UnbindPerUser limits each user's /3pid/delete, which may dial identity
	// servers (nil: unlimited); Bindings shares it for /3pid/unbind.
	UnbindPerUser *ratelimit.Limiter
}

// Register adds the routes under every client prefix and the submit paths.
func (a *Account) Register(r *mux.Router) {
	for _, p := range httpapi.ClientPrefixes {
		r.Handle(p+"/account/3pid", a.Auth.Require(a.list)).Methods(http.MethodGet)
		r.Handle(p+"/account/3pid/add", a.Auth.Require(a.add)).Methods(http.MethodPost)
		r.Handle(p+"/account/3pid/delete", a.Auth.Require(perUser(a.UnbindPerUser, a.delete))).Methods(http.MethodPost)
		r.Handle(p+"/account/3pid/email/requestToken", mxerr.Handler(a.requestEmailToken)).Methods(http.MethodPost)
		r.Handle(p+"/account/3pid/msisdn/requestToken", mxerr.Handler(a.requestMSISDNToken)).Methods(http.MethodPost)
	}
	for _, s := range []struct{ medium, path string }{
		{threepid.MediumEmail, account.EmailSubmitPath},
		{threepid.MediumMSISDN, account.MSISDNSubmitPath},
	} {
		r.Handle(s.path, a.linkPage(s.medium)).Methods(http.MethodGet)
		r.Handle(s.path, a.submit(s.medium)).Methods(http.MethodPost)
	}
}

func (a *Account) list(w http.ResponseWriter, r *http.Request) error {
	as, err := a.Service.List(r.Context(), auth.UserFrom(r.Context()).UserID)
	if err != nil {
		return err
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]any{"threepids": account.Threepids(as)})
	return nil
}

type tokenBody struct {
	ClientSecret *string `json:"client_secret"`
	Email        *string `json:"email"`
	Country      *string `json:"country"`
	PhoneNumber  *string `json:"phone_number"`
	// SendAttempt is an integer: a quoted number, a fraction or an exponent
	// is M_BAD_JSON, as the spec's type and Synapse's StrictInt have it.
	SendAttempt *int64  `json:"send_attempt"`
	NextLink    *string `json:"next_link"`
}

// parseCommon checks the parameters both requestToken bodies share.
func (b *tokenBody) parseCommon() (account.TokenRequest, error) {
	if !threepid.ValidClientSecret(*b.ClientSecret) {
		return account.TokenRequest{}, mxerr.InvalidParam.WithMessage("client_secret must be 1-255 characters of [0-9a-zA-Z.=_-]")
	}
	req := account.TokenRequest{ClientSecret: *b.ClientSecret, SendAttempt: *b.SendAttempt}
	if b.NextLink != nil && *b.NextLink != "" {
		if len(*b.NextLink) > 2048 || !threepid.ValidNextLink(*b.NextLink) {
			return account.TokenRequest{}, mxerr.InvalidParam.WithMessage("next_link must be an http(s) URL")
		}
		req.NextLink = *b.NextLink
	}
	return req, nil
}

func (a *Account) requestEmailToken(w http.ResponseWriter, r *http.Request) error {
	var b tokenBody
	if err := httpapi.DecodeJSON(r, &b); err != nil {
		return err
	}
	if err := mxerr.Required("client_secret", b.ClientSecret != nil, "email", b.Email != nil, "send_attempt", b.SendAttempt != nil); err != nil {
		return err
	}
	req, err := b.parseCommon()
	if err != nil {
		return err
	}
	req.Medium = threepid.MediumEmail
	if req.Address, err = threepid.CanonicalEmail(*b.Email); err != nil || !threepid.MailableEmail(req.Address) {
		return mxerr.InvalidParam.WithMessage("Invalid e-mail address")
	}
	return a.requestToken(w, r, req)
}

func (a *Account) requestMSISDNToken(w http.ResponseWriter, r *http.Request) error {
	var b tokenBody
	if err := httpapi.DecodeJSON(r, &b); err != nil {
		return err
	}
	if err := mxerr.Required("client_secret", b.ClientSecret != nil, "country", b.Country != nil,
		"phone_number", b.PhoneNumber != nil, "send_attempt", b.SendAttempt != nil); err != nil {
		return err
	}
	req, err := b.parseCommon()
	if err != nil {
		return err
	}
	req.Medium = threepid.MediumMSISDN
	if req.Address, err = threepid.CanonicalMSISDN(*b.Country, *b.PhoneNumber); err != nil {
		return mxerr.InvalidParam.WithMessage("Invalid phone number")
	}
	return a.requestToken(w, r, req)
}

func (a *Account) requestToken(w http.ResponseWriter, r *http.Request, req account.TokenRequest) error {
	if ok, wait := a.PerIP.Allow(r.Context(), ratelimit.IPKey(a.Auth.ClientIP(r))); !ok {
		return mxerr.LimitExceeded.WithMessage("Too many validation requests from this address").WithRetryAfter(wait)
	}
	if ok, wait := a.PerAddress.Allow(r.Context(), req.Medium+":"+req.Address); !ok {
		return mxerr.LimitExceeded.WithMessage("Too many validation requests for this 3PID").WithRetryAfter(wait)
	}
	resp, err := a.Service.RequestToken(r.Context(), req)
	if err != nil {
		return err
	}
	mxerr.WriteJSON(w, http.StatusOK, resp)
	return nil
}

type addBody struct {
	Auth         json.RawMessage `json:"auth"`
	ClientSecret *string         `json:"client_secret"`
	SID          *string         `json:"sid"`
}

func (a *Account) add(w http.ResponseWriter, r *http.Request) error {
	var b addBody
	if err := httpapi.DecodeJSON(r, &b); err != nil {
		return err
	}
	if err := mxerr.Required("client_secret", b.ClientSecret != nil, "sid", b.SID != nil); err != nil {
		return err
	}
	if !threepid.ValidClientSecret(*b.ClientSecret) || !threepid.ValidSID(*b.SID) {
		return mxerr.InvalidParam.WithMessage("sid and client_secret must be 1-255 characters of [0-9a-zA-Z.=_-]")
	}
	u := auth.UserFrom(r.Context())
	if err := a.Auth.Homeserver.RelayUIA(r.Context(), u.Caller, u.UserID, b.Auth); err != nil {
		return err
	}
	if err := a.Service.Add(r.Context(), u.UserID, *b.SID, *b.ClientSecret); err != nil {
		return err
	}
	mxerr.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// threepidBody is the body of /3pid/delete and /3pid/unbind.
type threepidBody struct {
	Medium   *string `json:"medium"`
	Address  *string `json:"address"`
	IDServer *string `json:"id_server"`
}

// parse checks the body and returns the canonical address.
func (b *threepidBody) parse() (medium, address, idServer string, err error) {
	if err := mxerr.Required("medium", b.Medium != nil, "address", b.Address != nil); err != nil {
		return "", "", "", err
	}
	if err := mxerr.CheckLength("id_server", str(b.IDServer), 255); err != nil {
		return "", "", "", err
	}
	address, err = account.CanonicalRequestAddress(*b.Medium, *b.Address)
	return *b.Medium, address, str(b.IDServer), err
}

func (a *Account) delete(w http.ResponseWriter, r *http.Request) error {
	var b threepidBody
	if err := httpapi.DecodeJSON(r, &b); err != nil {
		return err
	}
	medium, address, idServer, err := b.parse()
	if err != nil {
		return err
	}
	result, err := a.Service.Delete(r.Context(), auth.UserFrom(r.Context()).UserID, medium, address, idServer)
	if err != nil {
		return err
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": result})
	return nil
}
