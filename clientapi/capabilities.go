package clientapi

import (
	"net/http"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/threepidd/threepidd/auth"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/httpapi"
	"github.com/threepidd/threepidd/mxerr"
)

// threepidChangesPath is m.3pid_changes.enabled in a /capabilities answer
// (sjson path: the dot in the capability's name escaped).
const threepidChangesPath = `capabilities.m\.3pid_changes.enabled`

// Capabilities serves GET /capabilities: the homeserver's answer, asked with
// the client's credentials and forwarded headers, with m.3pid_changes.enabled
// set from threepidd's configuration (clients offer "Add e-mail" by it) and
// the rest of the body as the homeserver wrote it. Answers other than 200
// pass through unchanged.
type Capabilities struct {
	Homeserver *homeserver.Client
	Auth       *auth.Auth
	// ThreepidChanges is m.3pid_changes.enabled: at least one medium can be
	// validated.
	ThreepidChanges bool
}

// Register adds the route under every client prefix.
func (h *Capabilities) Register(r *mux.Router) {
	for _, p := range httpapi.ClientPrefixes {
		r.Handle(p+"/capabilities", mxerr.Handler(h.capabilities)).Methods(http.MethodGet)
	}
}

func (h *Capabilities) capabilities(w http.ResponseWriter, r *http.Request) error {
	status, body, err := h.Homeserver.Forward(r.Context(), h.Auth.Caller(r), http.MethodGet, r.URL.EscapedPath(), nil)
	if err != nil {
		return err
	}
	if status == http.StatusOK {
		if !gjson.GetBytes(body, "capabilities").IsObject() {
			return mxerr.Unavailable.WithMessage("The homeserver's capabilities are unreadable")
		}
		if body, err = sjson.SetBytes(body, threepidChangesPath, h.ThreepidChanges); err != nil {
			return mxerr.Unavailable.WithMessage("The homeserver's capabilities are unreadable")
		}
	}
	mxerr.WriteBody(w, status, body)
	return nil
}
