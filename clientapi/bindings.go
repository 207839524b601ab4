package clientapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/threepidd/threepidd/auth"
	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/httpapi"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/ratelimit"
	"github.com/threepidd/threepidd/threepid"
)

// Bindings serves /3pid/bind, /3pid/unbind and the deprecated POST /3pid.
type Bindings struct {
	Service *bindings.Service
	Auth    *auth.Auth
	// UnbindPerUser limits each user's /3pid/unbind (nil: unlimited); the
	// same limiter as Account's, so /delete and /unbind share one bucket.
	UnbindPerUser *ratelimit.Limiter
}

// Register adds the routes under every client prefix.
func (b *Bindings) Register(r *mux.Router) {
	for _, p := range httpapi.ClientPrefixes {
		r.Handle(p+"/account/3pid/bind", b.Auth.Require(b.bind)).Methods(http.MethodPost)
		r.Handle(p+"/account/3pid", b.Auth.Require(b.legacyBind)).Methods(http.MethodPost)
		r.Handle(p+"/account/3pid/unbind", b.Auth.Require(perUser(b.UnbindPerUser, b.unbind))).Methods(http.MethodPost)
	}
}

// bindBody is the body of /3pid/bind and the three_pid_creds of POST /3pid.
type bindBody struct {
	ClientSecret  *string `json:"client_secret"`
	IDServer      *string `json:"id_server"`
	IDAccessToken *string `json:"id_access_token"`
	SID           *string `json:"sid"`
}

func (b *Bindings) bind(w http.ResponseWriter, r *http.Request) error {
	var body bindBody
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	return b.doBind(w, r, body)
}

// legacyBind serves the deprecated POST /account/3pid, which the spec now
// defines as equivalent to /3pid/bind.
func (b *Bindings) legacyBind(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Creds *bindBody `json:"three_pid_creds"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	if body.Creds == nil {
		return mxerr.MissingParam.WithMessage("Missing parameter: three_pid_creds")
	}
	return b.doBind(w, r, *body.Creds)
}

func (b *Bindings) doBind(w http.ResponseWriter, r *http.Request, body bindBody) error {
	if err := mxerr.Required("client_secret", body.ClientSecret != nil, "id_server", body.IDServer != nil,
		"id_access_token", body.IDAccessToken != nil, "sid", body.SID != nil); err != nil {
		return err
	}
	if !threepid.ValidClientSecret(*body.ClientSecret) || !threepid.ValidSID(*body.SID) {
		return mxerr.InvalidParam.WithMessage("sid and client_secret must be 1-255 characters of [0-9a-zA-Z.=_-]")
	}
	if err := mxerr.CheckLength("id_access_token", *body.IDAccessToken, 4096); err != nil {
		return err
	}
	u := auth.UserFrom(r.Context())
	if err := b.Service.Bind(r.Context(), u.UserID, *body.IDServer, *body.IDAccessToken, *body.SID, *body.ClientSecret); err != nil {
		return err
	}
	mxerr.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

func (b *Bindings) unbind(w http.ResponseWriter, r *http.Request) error {
	var body threepidBody
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	medium, address, idServer, err := body.parse()
	if err != nil {
		return err
	}
	result, err := b.Service.Unbind(r.Context(), auth.UserFrom(r.Context()).UserID, medium, address, idServer)
	if err != nil {
		return err
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": result})
	return nil
}

// str returns *p or "".
func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
