// Package adminapi is threepidd's operator API under /_threepidd/admin/v1:
// looking up a user's 3PIDs and bindings and a 3PID's owner, removing a 3PID
// from an account, and deactivating a user (unbind everything, remove
// everything). Requests carry Authorization: Bearer <admin_token>; without an
// admin_token the API is off and its paths answer 404 M_UNRECOGNIZED.
//
// Administrators are never asked the policy, but their changes fire the
// after-events like any other (account.Service.RemoveThreepid and
// DeactivateUser).
package adminapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/threepidd/threepidd/account"
	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/httpapi"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/router"
	"github.com/threepidd/threepidd/threepid"
)

// Prefix is the path prefix of the admin API.
const Prefix = "/_threepidd/admin/v1"

// Handler serves the admin API.
type Handler struct {
	Account  *account.Service
	Bindings *bindings.Service
	// Token is the admin_token; empty turns the API off.
	Token string
	// ServerName is the homeserver's name: only its users are administered.
	ServerName string
}

// Register adds the admin routes to r, unless the API is off. User IDs and
// addresses in paths are percent-encoded (%40alice%3Aexample.org); the routes
// match the encoded path, so an encoded "/" stays inside its segment.
func (h *Handler) Register(r *mux.Router) {
	if h.Token == "" {
		return
	}
	sub := router.EncodedSubrouter(r)
	sub.Handle(Prefix+"/users/{userId}/threepids", h.auth(h.userThreepids)).Methods(http.MethodGet)
	sub.Handle(Prefix+"/users/{userId}/threepids/{medium}/{address}", h.auth(h.removeThreepid)).Methods(http.MethodDelete)
	sub.Handle(Prefix+"/users/{userId}/deactivate", h.auth(h.deactivate)).Methods(http.MethodPost)
	sub.Handle(Prefix+"/threepids/{medium}/{address}", h.auth(h.owner)).Methods(http.MethodGet)
}

// auth admits requests bearing the admin token: 401 M_MISSING_TOKEN without a
// token, 403 M_FORBIDDEN with another one. The token is taken from the
// Authorization header only: a query string ends up in proxies' access logs.
// The digests are compared in constant time, which hides the token's length too.
func (h *Handler) auth(next mxerr.Handler) mxerr.Handler {
	want := sha256.Sum256([]byte(h.Token))
	return func(w http.ResponseWriter, r *http.Request) error {
		token := httpapi.BearerToken(r)
		if token == "" {
			return mxerr.MissingToken.WithMessage("The admin API takes its token in an Authorization: Bearer header")
		}
		got := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			return mxerr.Forbidden.WithMessage("Not the admin token")
		}
		return next(w, r)
	}
}

// user returns the local user named in the path.
func (h *Handler) user(r *http.Request) (string, error) {
	userID, err := router.PathVar(r, "userId")
	if err != nil {
		return "", err
	}
	if !threepid.ValidUserID(userID) {
		return "", mxerr.InvalidParam.WithMessage("%q is not a user ID", userID)
	}
	if threepid.UserServerName(userID) != h.ServerName {
		return "", mxerr.InvalidParam.WithMessage("%s is not a user of %s", userID, h.ServerName)
	}
	return userID, nil
}

// threepid returns the medium and canonical address named in the path.
func (h *Handler) threepid(r *http.Request) (medium, address string, err error) {
	if medium, err = router.PathVar(r, "medium"); err != nil {
		return "", "", err
	}
	if address, err = router.PathVar(r, "address"); err != nil {
		return "", "", err
	}
	address, err = account.CanonicalRequestAddress(medium, address)
	return medium, address, err
}

// bindingJSON is an entry of "bindings".
type bindingJSON struct {
	Medium   string `json:"medium"`
	Address  string `json:"address"`
	IDServer string `json:"id_server"`
	BoundAt  int64  `json:"bound_at"`
}

func (h *Handler) userThreepids(w http.ResponseWriter, r *http.Request) error {
	userID, err := h.user(r)
	if err != nil {
		return err
	}
	as, err := h.Account.List(r.Context(), userID)
	if err != nil {
		return err
	}
	bs, err := h.Bindings.List(r.Context(), userID)
	if err != nil {
		return err
	}
	bound := make([]bindingJSON, 0, len(bs))
	for _, b := range bs {
		bound = append(bound, bindingJSON{Medium: b.Medium, Address: b.Address, IDServer: b.IDServer, BoundAt: b.BoundAt})
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]any{"threepids": account.Threepids(as), "bindings": bound})
	return nil
}

func (h *Handler) owner(w http.ResponseWriter, r *http.Request) error {
	medium, address, err := h.threepid(r)
	if err != nil {
		return err
	}
	userID, err := h.Account.Owner(r.Context(), medium, address)
	if err != nil {
		return err
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]string{"user_id": userID})
	return nil
}

func (h *Handler) removeThreepid(w http.ResponseWriter, r *http.Request) error {
	userID, err := h.user(r)
	if err != nil {
		return err
	}
	medium, address, err := h.threepid(r)
	if err != nil {
		return err
	}
	if err := h.Account.RemoveThreepid(r.Context(), userID, medium, address); err != nil {
		return err
	}
	mxerr.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

func (h *Handler) deactivate(w http.ResponseWriter, r *http.Request) error {
	userID, err := h.user(r)
	if err != nil {
		return err
	}
	result, err := h.Account.DeactivateUser(r.Context(), userID)
	if err != nil {
		return err
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": result})
	return nil
}
