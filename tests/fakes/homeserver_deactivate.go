package fakes

// Account deactivation.

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"

	"github.com/threepidd/threepidd/mxerr"
)

// Deactivated reports whether userID has been deactivated.
func (hs *Homeserver) Deactivated(userID string) bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	u := hs.user(userID)
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
	if err := hsCheckErase(body, "erase: Input should be a valid boolean"); err != nil {
		return err
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
// models: local 3PIDs, devices, tokens, password and pushers go. hs.mu must be held.
func (hs *Homeserver) deactivate(userID string) {
	u := hs.user(userID)
	for _, tp := range slices.Clone(u.threepids) {
		hs.dropThreepid(u, tp.Medium, tp.Address)
	}
	u.deactivated, u.password, u.pushers = true, "", nil
	hs.deleteDevices(userID, nil)
}

// serveAdminDeactivate is Synapse's POST /_synapse/admin/v1/deactivate/{userId}
// ({"erase": bool}): the account is deactivated as by the user, without UIA,
// and without threepidd hearing of it.
func (hs *Homeserver) serveAdminDeactivate(w http.ResponseWriter, r *http.Request) error {
	u, err := hs.adminUser(r, "Can only deactivate local users")
	if err != nil {
		return err
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, hsMaxBody))
	if err != nil {
		return fmt.Errorf("read request body: %w", err)
	}
	if len(raw) > 0 {
		body, err := hsJSONObject(raw)
		if err != nil {
			return err
		}
		if err := hsCheckErase(body, "Param 'erase' must be a boolean, if given"); err != nil {
			return err
		}
	}
	hs.deactivate(u.id)
	mxerr.WriteJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": hs.unbindResult})
	return nil
}

// deleteDevices removes the listed devices of userID with their tokens, or every
// device when deviceIDs is empty. hs.mu must be held.
func (hs *Homeserver) deleteDevices(userID string, deviceIDs []string) {
	maps.DeleteFunc(hs.tokens, func(_ string, tok *hsToken) bool {
		return tok.userID == userID && (len(deviceIDs) == 0 || slices.Contains(deviceIDs, tok.deviceID))
	})
}

// hsCheckErase refuses a deactivation body whose "erase" is not a boolean,
// with Synapse's message for that endpoint.
func hsCheckErase(body map[string]any, message string) error {
	if erase, ok := body["erase"]; ok {
		if _, isBool := erase.(bool); !isBool {
			return mxerr.BadJSON.WithMessage("%s", message)
		}
	}
	return nil
}
