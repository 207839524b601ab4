package fakes

// The user-interactive endpoints threepidd relays to the homeserver:
// POST /account/3pid/add and the device deletions.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/threepidd/threepidd/mxerr"
)

// readRelay reads the body of a user-interactive request and records the call.
func (hs *Homeserver) readRelay(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, hsMaxBody))
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	hs.mu.Lock()
	hs.relayCalls = append(hs.relayCalls, RelayCall{Method: r.Method, Path: r.URL.Path, Body: body})
	hs.mu.Unlock()
	return body, nil
}

// hsJSONObject parses a request body the way Synapse does.
func hsJSONObject(body []byte) (map[string]any, error) {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, mxerr.NotJSON.WithMessage("Content not JSON.")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, mxerr.BadJSON.WithMessage("Content must be a JSON object.")
	}
	return obj, nil
}

// serveThreepidAdd is Synapse's POST /account/3pid/add with no validation
// sessions: UIA first, then 400 M_THREEPID_AUTH_FAILED for any sid.
func (hs *Homeserver) serveThreepidAdd(w http.ResponseWriter, r *http.Request) error {
	raw, err := hs.readRelay(r)
	if err != nil {
		return err
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	req, err := hs.authenticate(r, false)
	if err != nil {
		return err
	}
	body, err := hsJSONObject(raw)
	if err != nil {
		return err
	}
	if err := hsCheckThreepidAddBody(body); err != nil {
		return err
	}
	if req.appservice {
		// Synapse's validate_user_via_ui_auth raises ValueError for a requester
		// without an access token ID, which is every appservice.
		return mxerr.Unknown
	}
	if err := hs.synapseUIA(r, body, req); err != nil {
		return err
	}
	return mxerr.ThreepidAuthFailed.WithMessage("No validated 3pid session found")
}

// hsCheckThreepidAddBody applies Synapse's pydantic model {client_secret, sid}.
func hsCheckThreepidAddBody(body map[string]any) error {
	var missing, bad []string
	for _, field := range []string{"client_secret", "sid"} {
		v, ok := body[field]
		s, isString := v.(string)
		switch {
		case !ok:
			missing = append(missing, field)
		case !isString, field == "client_secret" && !hsValidClientSecret(s):
			bad = append(bad, field)
		}
	}
	switch {
	case len(missing) == 1 && len(bad) == 0:
		return mxerr.MissingParam.WithMessage("%s: Field required", missing[0])
	case len(missing)+len(bad) > 0:
		return mxerr.BadJSON.WithMessage("invalid fields: %s", strings.Join(append(missing, bad...), ", "))
	}
	return nil
}

// hsValidClientSecret is Synapse's ClientSecretStr: 1–255 characters of which at
// least one is in [0-9a-zA-Z.=_-] (the pattern is unanchored in Synapse).
func hsValidClientSecret(s string) bool {
	return len(s) >= 1 && len(s) <= 255 && strings.ContainsFunc(s, func(c rune) bool {
		return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.ContainsRune(".=_-", c)
	})
}

// hsLenientJSON parses a body as Dendrite's gjson reads it: anything that is not
// a JSON object reads as an empty one.
func hsLenientJSON(raw []byte) map[string]any {
	var body map[string]any
	_ = json.Unmarshal(raw, &body)
	return body
}

// serveDeleteDevice is Dendrite's DeleteDeviceById: a UIA session is tied to the
// device it was started for; after UIA, a device the user does not have is
// "deleted" silently (200 {}), and a real one is deleted with its token.
func (hs *Homeserver) serveDeleteDevice(w http.ResponseWriter, r *http.Request) error {
	raw, err := hs.readRelay(r)
	if err != nil {
		return err
	}
	deviceID := mux.Vars(r)["deviceId"]
	hs.mu.Lock()
	defer hs.mu.Unlock()
	req, err := hs.authenticate(r, false)
	if err != nil {
		return err
	}
	body := hsLenientJSON(raw)
	auth, _ := body["auth"].(map[string]any)
	session, _ := auth["session"].(string)
	if dev, ok := hs.deviceToDelete[session]; ok && dev != deviceID {
		return mxerr.Forbidden.WithMessage("session and device mismatch")
	}
	userID, err := hs.dendriteUIA(body)
	if err != nil {
		var c *hsChallenge
		if errors.As(err, &c) && c.body["errcode"] == nil {
			hs.deviceToDelete[c.body["session"].(string)] = deviceID
		}
		return err
	}
	if localpart := strings.TrimPrefix(strings.SplitN(req.userID, ":", 2)[0], "@"); userID != localpart && userID != req.userID {
		return mxerr.Forbidden.WithMessage("Cannot delete another user's device")
	}
	hs.deleteDevices(req.userID, []string{deviceID})
	delete(hs.deviceToDelete, session)
	mxerr.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// serveDeleteDevices is Dendrite's DeleteDevices, including its trap: an empty
// "devices" list deletes every device of the user, the caller's own included.
func (hs *Homeserver) serveDeleteDevices(w http.ResponseWriter, r *http.Request) error {
	raw, err := hs.readRelay(r)
	if err != nil {
		return err
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.deleteDevicesCalls++
	req, err := hs.authenticate(r, false)
	if err != nil {
		return err
	}
	userID, err := hs.dendriteUIA(hsLenientJSON(raw))
	if err != nil {
		return err
	}
	if userID != req.userID {
		return mxerr.Forbidden.WithMessage("unable to delete devices for other user")
	}
	var payload struct {
		Devices []string `json:"devices"`
	}
	if err := json.Unmarshal(raw, &payload); err != nil {
		return fmt.Errorf("unmarshal device deletion request: %w", err)
	}
	hs.deleteDevices(req.userID, payload.Devices)
	mxerr.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}
