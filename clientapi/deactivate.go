package clientapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/threepidd/threepidd/account"
	"github.com/threepidd/threepidd/auth"
	"github.com/threepidd/threepidd/httpapi"
	"github.com/threepidd/threepidd/mxerr"
)

// Deactivate serves POST /account/deactivate: relayed to the homeserver, then
// threepidd's 3PIDs of the account go (account.Service.Deactivate).
type Deactivate struct {
	Service *account.Service
	Auth    *auth.Auth
}

// Register adds the route under every client prefix.
func (h *Deactivate) Register(r *mux.Router) {
	for _, p := range httpapi.ClientPrefixes {
		r.Handle(p+"/account/deactivate", h.Auth.Require(h.deactivate)).Methods(http.MethodPost)
	}
}

// deactivate runs after whoami (Auth.Require), while the token still works.
func (h *Deactivate) deactivate(w http.ResponseWriter, r *http.Request) error {
	body, err := httpapi.ReadBody(r, httpapi.MaxBodyBytes)
	if err != nil {
		return err
	}
	user := auth.UserFrom(r.Context())
	status, resp, err := h.Service.Deactivate(r.Context(), user.Caller, user.UserID, r.URL.Path, body)
	if err != nil {
		return err
	}
	mxerr.WriteBody(w, status, resp)
	return nil
}
