package fakes

// Users, devices and access tokens of the fake homeserver, and whoami.

import (
	"crypto/rand"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/threepidd/threepidd/mxerr"
)

// AddUser registers a local user with a password and returns its user ID.
func (hs *Homeserver) AddUser(localpart, password string) (userID string) {
	hs.t.Helper()
	hs.mu.Lock()
	defer hs.mu.Unlock()
	userID = hs.userID(localpart)
	if hs.user(userID) != nil {
		hs.t.Fatalf("fake homeserver: user %s already exists", userID)
	}
	hs.users[userID] = &hsUser{id: userID, password: password, createdAt: time.Now().Unix()}
	return userID
}

// Login logs userID in on a new device and returns its access token and device ID.
func (hs *Homeserver) Login(userID string) (accessToken, deviceID string) {
	hs.t.Helper()
	hs.mu.Lock()
	defer hs.mu.Unlock()
	u := hs.user(userID)
	if u == nil || u.deactivated {
		hs.t.Fatalf("fake homeserver: cannot log in %s: no such active user", userID)
	}
	accessToken, deviceID = "syt_"+rand.Text(), rand.Text()[:10]
	hs.tokens[accessToken] = &hsToken{userID: userID, deviceID: deviceID}
	return accessToken, deviceID
}

// AddGuest registers a guest (numeric localpart, as Synapse names guests) and
// returns its user ID and access token.
func (hs *Homeserver) AddGuest() (userID, token string) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.nextGuest++
	userID = hs.userID(strconv.Itoa(hs.nextGuest))
	hs.users[userID] = &hsUser{id: userID, guest: true, createdAt: time.Now().Unix()}
	token = "syt_guest_" + rand.Text()
	hs.tokens[token] = &hsToken{userID: userID, deviceID: hsGuestDeviceID}
	return userID, token
}

// AddAppservice registers an application service token whose sender is
// senderLocalpart. With ?user_id= it may act as any registered local user.
func (hs *Homeserver) AddAppservice(asToken, senderLocalpart string) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	sender := hs.userID(senderLocalpart)
	if hs.user(sender) == nil {
		hs.users[sender] = &hsUser{id: sender, createdAt: time.Now().Unix()}
	}
	hs.appservices[asToken] = sender
}

// RevokeToken logs the token out, as /logout does: the token and its device go.
func (hs *Homeserver) RevokeToken(token string) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	delete(hs.tokens, token)
}

// SoftLogout expires the token: requests with it answer 401 M_UNKNOWN_TOKEN with
// "soft_logout": true, as Synapse does for an expired token.
func (hs *Homeserver) SoftLogout(token string) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if tok := hs.token(token); tok != nil {
		tok.softLogout = true
	}
}

// TokenValid reports whether a request with token would be authenticated.
func (hs *Homeserver) TokenValid(token string) bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	tok := hs.token(token)
	_, as := hs.appservices[token]
	return as || (tok != nil && !tok.softLogout)
}

// Devices lists the device IDs userID has, sorted.
func (hs *Homeserver) Devices(userID string) []string {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	var ids []string
	for _, tok := range hs.tokens {
		if tok.userID == userID {
			ids = append(ids, tok.deviceID)
		}
	}
	slices.Sort(ids)
	return ids
}

// accessToken extracts the access token as Synapse does: one Bearer header or
// one ?access_token=, never both.
func hsAccessToken(r *http.Request) (string, error) {
	query := r.URL.Query()["access_token"]
	headers := r.Header.Values("Authorization")
	if len(headers) == 0 {
		if len(query) == 0 {
			return "", mxerr.MissingToken
		}
		return query[0], nil
	}
	if len(query) > 0 {
		return "", mxerr.MissingToken.WithMessage("Mixing Authorization headers and access_token query parameters.")
	}
	if len(headers) > 1 {
		return "", mxerr.MissingToken.WithMessage("Too many Authorization headers.")
	}
	parts := strings.Split(headers[0], " ")
	if len(parts) != 2 || parts[0] != "Bearer" {
		return "", mxerr.MissingToken.WithMessage("Invalid Authorization header.")
	}
	return parts[1], nil
}

// authenticate resolves the request's token to a requester, with Synapse's
// errors. hs.mu must be held.
func (hs *Homeserver) authenticate(r *http.Request, allowGuest bool) (hsRequester, error) {
	token, err := hsAccessToken(r)
	if err != nil {
		return hsRequester{}, err
	}
	return hs.requesterFor(r, token, allowGuest)
}

func (hs *Homeserver) requesterFor(r *http.Request, token string, allowGuest bool) (hsRequester, error) {
	if sender, ok := hs.appservices[token]; ok {
		userID := sender
		if q := r.URL.Query(); q.Has("user_id") {
			userID = q.Get("user_id")
		}
		switch {
		case userID == sender:
		case !hs.isLocal(userID):
			return hsRequester{}, mxerr.Forbidden.WithMessage("Application service cannot masquerade as this user (%s).", userID)
		case hs.user(userID) == nil:
			return hsRequester{}, mxerr.Forbidden.WithMessage("Application service has not registered this user (%s)", userID)
		}
		return hsRequester{userID: userID, appservice: true}, nil
	}
	tok := hs.token(token)
	if tok == nil {
		return hsRequester{}, mxerr.UnknownToken.WithMessage("Invalid access token passed.").WithExtra("soft_logout", false)
	}
	if tok.softLogout {
		return hsRequester{}, mxerr.UnknownToken.WithMessage("Access token has expired").WithExtra("soft_logout", true)
	}
	u := hs.user(tok.userID)
	if u.guest && !allowGuest {
		return hsRequester{}, mxerr.GuestAccessForbidden.WithMessage("Guest access not allowed")
	}
	return hsRequester{userID: tok.userID, deviceID: tok.deviceID, guest: u.guest}, nil
}

func (hs *Homeserver) serveWhoami(w http.ResponseWriter, r *http.Request) error {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.whoamiCalls++
	req, err := hs.authenticate(r, true)
	if err != nil {
		return err
	}
	resp := map[string]any{"user_id": req.userID, "is_guest": req.guest}
	if req.deviceID != "" { // appservices have no device to report, as in Synapse
		resp["device_id"] = req.deviceID
	}
	mxerr.WriteJSON(w, http.StatusOK, resp)
	return nil
}
