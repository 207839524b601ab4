package deactivation

import (
	"net/http"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/threepidd/threepidd/api"
)

// Handler serves /account/deactivate.
type Handler struct {
	Service *Service
	Auth    *api.Auth
}

// Register adds POST /account/deactivate under every client prefix.
func (h *Handler) Register(r *mux.Router) {
	for _, p := range api.ClientPrefixes {
		r.Handle(p+"/account/deactivate", h.Auth.Require(h.deactivate)).Methods(http.MethodPost)
	}
}

// deactivate runs after whoami (Auth.Require), while the token still works.
func (h *Handler) deactivate(w http.ResponseWriter, r *http.Request) error {
	body, err := api.ReadBody(r, api.MaxBodyBytes)
	if err != nil {
		return err
	}
	user := api.UserFrom(r.Context())
	status, resp, err := h.Service.Deactivate(r.Context(), user.Caller, user.UserID, r.URL.Path, body)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(resp)))
	w.WriteHeader(status)
	_, _ = w.Write(resp)
	return nil
}
