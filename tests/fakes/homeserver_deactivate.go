package fakes

// Account deactivation.

import (
	"maps"
	"net/http"
	"slices"

	"github.com/threepidd/threepidd/mxerr"
)

// Deactivated reports whether userID has been deactivated.
func (hs *Homeserver) Deactivated(userID string) bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	u := hs.users[userID]
	return u != nil && u.deactivated
}

// SetDeactivateUnbindResult sets the id_server_unbind_result POST
// /account/deactivate answers: "success" (the default; Synapse's answer when it
// holds no identity-server bindings) or "no-support" (a binding failed to unbind).
func (hs *Homeserver) SetDeactivateUnbindResult(result string) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.unbindResult = result
}

// serveDeactivate is Synapse's POST /account/deactivate: UIA (skipped for
// appservices), then the account is deactivated.
func (hs *Homeserver) serveDeactivate(w http.ResponseWriter, r *http.Request) error {
	raw, err := hs.readRelay(r)
	if err != nil {
		return err
	}
	body, err := hsJSONObject(raw)
	if err != nil {
		return err
	}
	if erase, ok := body["erase"]; ok {
		if _, isBool := erase.(bool); !isBool {
			return mxerr.BadJSON.WithMessage("erase: Input should be a valid boolean")
		}
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	req, err := hs.authenticate(r, false)
	if err != nil {
		return err
	}
	if !req.appservice {
		if err := hs.synapseUIA(r, body, req); err != nil {
			return err
		}
	}
	hs.deactivate(req.userID)
	mxerr.WriteJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": hs.unbindResult})
	return nil
}

// deactivate does what Synapse's deactivate_account does to the state the fake
// models: local 3PIDs, devices, tokens and password go. hs.mu must be held.
func (hs *Homeserver) deactivate(userID string) {
	u := hs.users[userID]
	u.deactivated, u.password, u.threepids = true, "", nil
	hs.deleteDevices(userID, nil)
}

// deleteDevices removes the listed devices of userID with their tokens, or every
// device when deviceIDs is empty. hs.mu must be held.
func (hs *Homeserver) deleteDevices(userID string, deviceIDs []string) {
	maps.DeleteFunc(hs.tokens, func(_ string, tok *hsToken) bool {
		return tok.userID == userID && (len(deviceIDs) == 0 || slices.Contains(deviceIDs, tok.deviceID))
	})
}
