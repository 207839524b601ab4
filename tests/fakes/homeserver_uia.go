package fakes

// User-interactive authentication as Synapse and Dendrite do it.

import (
	"crypto/rand"
	"net/http"
	"strings"
	"time"

	"golang.org/x/text/cases"

	"github.com/threepidd/threepidd/mxerr"
)

// synapseUIA is Synapse's check_ui_auth plus validate_user_via_ui_auth with the
// single flow [m.login.password]. It returns nil when the request may proceed.
// hs.mu must be held.
func (hs *Homeserver) synapseUIA(r *http.Request, body map[string]any, req hsRequester) error {
	authdict, _ := body["auth"].(map[string]any)
	sid, _ := authdict["session"].(string)
	var s *hsSynapseSession
	if sid == "" {
		sid = rand.Text()
		s = &hsSynapseSession{uri: r.RequestURI, method: r.Method, created: time.Now()}
		hs.synapseSessions[sid] = s
	} else {
		s = hs.synapseSessions[sid]
		if s == nil || time.Since(s.created) > hsUIASessionLifetime {
			return hsErr(http.StatusBadRequest, "M_UNKNOWN", "Unknown session ID: %s", sid)
		}
		if s.uri != r.RequestURI || s.method != r.Method {
			return hsErr(http.StatusForbidden, "M_UNKNOWN", "Requested operation has changed during the UI authentication session.")
		}
	}
	challenge := map[string]any{
		"session": sid,
		"flows":   []map[string]any{{"stages": []string{hsPasswordStage}}},
		"params":  map[string]any{},
	}
	if len(authdict) == 0 {
		return &hsChallenge{body: challenge}
	}
	if _, ok := authdict["type"]; ok {
		userID, err := hs.synapsePassword(authdict)
		switch {
		case err != nil:
			return err
		case userID == "": // a failed stage is merged into the 401 so the client can retry
			challenge["errcode"], challenge["error"] = "M_FORBIDDEN", "Invalid username or password"
		default:
			s.validated = userID
		}
	}
	if s.validated == "" {
		challenge["completed"] = []string{}
		return &hsChallenge{body: challenge}
	}
	// A completed session stays completed: replaying it passes, whatever else
	// the auth dict says, until it expires.
	if s.validated != req.userID {
		return mxerr.Forbidden.WithMessage("Invalid auth")
	}
	return nil
}

// synapsePassword is Synapse's validate_login for m.login.password in UIA: the
// user ID on success, "" for a wrong password or unknown user, an error for
// malformed input.
func (hs *Homeserver) synapsePassword(authdict map[string]any) (string, error) {
	loginType, ok := authdict["type"].(string)
	if !ok {
		return "", mxerr.InvalidParam.WithMessage("Bad parameter: type")
	}
	if loginType != hsPasswordStage {
		return "", hsErr(http.StatusBadRequest, "M_UNKNOWN", "Unknown login type %s", loginType)
	}
	password, ok := authdict["password"].(string)
	if !ok {
		return "", mxerr.InvalidParam.WithMessage("Bad parameter: password")
	}
	identifier, _ := authdict["identifier"].(map[string]any)
	if user, _ := authdict["user"].(string); user != "" {
		identifier = map[string]any{"type": "m.id.user", "user": user}
	}
	medium, _ := authdict["medium"].(string)
	address, _ := authdict["address"].(string)
	if medium != "" && address != "" {
		identifier = map[string]any{"type": "m.id.thirdparty", "medium": medium, "address": address}
	}
	if len(identifier) == 0 {
		return "", mxerr.InvalidParam.WithMessage("Invalid login submission")
	}
	idType, ok := identifier["type"]
	if !ok {
		return "", mxerr.MissingParam.WithMessage("'identifier' dict has no key 'type'")
	}
	var username string
	switch idType {
	case "m.id.thirdparty":
		medium, _ := identifier["medium"].(string)
		address, ok := identifier["address"].(string)
		if medium == "" || !ok {
			return "", hsErr(http.StatusBadRequest, "M_UNKNOWN", "Invalid thirdparty identifier")
		}
		if medium == "email" {
			canonical, err := hsCanonicalEmail(address)
			if err != nil {
				return "", err
			}
			address = canonical
		}
		if username = hs.threepidOwner(medium, address); username == "" {
			return "", nil
		}
	case "m.id.user":
		if username, _ = identifier["user"].(string); username == "" {
			return "", hsErr(http.StatusBadRequest, "M_UNKNOWN", "User identifier is missing 'user' key")
		}
	default:
		return "", hsErr(http.StatusBadRequest, "M_UNKNOWN", "Unknown login identifier type")
	}
	if !strings.HasPrefix(username, "@") {
		username = hs.userID(username)
	}
	u := hs.userFold(username)
	if u == nil || u.password == "" || u.password != password {
		return "", nil
	}
	return u.id, nil
}

// userFold finds a user as Synapse's _find_user_id_and_pwd_hash does: case-
// insensitively, preferring the exact ID when several match. hs.mu must be held.
func (hs *Homeserver) userFold(userID string) *hsUser {
	if u := hs.user(userID); u != nil {
		return u
	}
	var found *hsUser
	for id, u := range hs.users {
		if strings.EqualFold(id, userID) {
			if found != nil {
				return nil
			}
			found = u
		}
	}
	return found
}

// threepidOwner is Synapse's get_user_id_by_threepid: the holder of
// exactly (medium, address), or "". hs.mu must be held.
func (hs *Homeserver) threepidOwner(medium, address string) string {
	if u := hs.holders[hsThreepidKey{medium, address}]; u != nil {
		return u.id
	}
	return ""
}

// hsCanonicalEmail is Synapse's canonicalise_email.
func hsCanonicalEmail(address string) (string, error) {
	local, domain, ok := strings.Cut(strings.TrimSpace(address), "@")
	if !ok || strings.Contains(domain, "@") {
		return "", hsErr(http.StatusBadRequest, "M_UNKNOWN", "Unable to parse email address")
	}
	return cases.Fold().String(local) + "@" + strings.ToLower(domain), nil
}

// dendriteUIA is Dendrite's UserInteractive.Verify with the single flow
// [m.login.password]. It returns the full user ID that authenticated, or
// *hsChallenge / *mxerr.Error. hs.mu must be held.
func (hs *Homeserver) dendriteUIA(body map[string]any) (string, error) {
	challenge := func(session string, completed []string) map[string]any {
		return map[string]any{
			"completed": completed,
			"flows":     []map[string]any{{"stages": []string{hsPasswordStage}}},
			"session":   session,
			"params":    map[string]any{},
		}
	}
	authValue, present := body["auth"]
	if !present {
		session := rand.Text()
		hs.dendriteSessions[session] = true
		return "", &hsChallenge{body: challenge(session, []string{})}
	}
	auth, _ := authValue.(map[string]any)
	if authType, _ := auth["type"].(string); authType != hsPasswordStage {
		return "", mxerr.BadJSON.WithMessage("Unknown auth.type: %s", authType)
	}
	// An unknown session is accepted: the password stage is a single-stage flow.
	session, _ := auth["session"].(string)
	userID, loginErr := hs.dendritePassword(auth)
	if loginErr != nil {
		var completed []string // JSON null for a session Dendrite does not know
		if hs.dendriteSessions[session] {
			completed = []string{}
		}
		c := challenge(session, completed)
		c["errcode"], c["error"] = loginErr.ErrCode, loginErr.Message
		return "", &hsChallenge{body: c}
	}
	delete(hs.dendriteSessions, session)
	return userID, nil
}

// dendritePassword is Dendrite's LoginTypePassword.Login.
func (hs *Homeserver) dendritePassword(auth map[string]any) (string, *mxerr.Error) {
	var username string
	if identifier, _ := auth["identifier"].(map[string]any); identifier["type"] == "m.id.user" {
		username, _ = identifier["user"].(string)
	} else {
		username, _ = auth["user"].(string)
	}
	password, _ := auth["password"].(string)
	switch {
	case username == "":
		return "", mxerr.BadJSON.WithMessage("A username must be supplied.")
	case password == "":
		return "", mxerr.BadJSON.WithMessage("A password must be supplied.")
	}
	localpart := username
	if strings.HasPrefix(username, "@") {
		lp, domain, ok := strings.Cut(username[1:], ":")
		if !ok {
			return "", hsErr(http.StatusUnauthorized, "M_INVALID_USERNAME", "invalid username")
		}
		if domain != hs.serverName {
			return "", hsErr(http.StatusUnauthorized, "M_INVALID_USERNAME", "user ID does not belong to this server")
		}
		localpart = lp
	}
	for _, id := range []string{hs.userID(strings.ToLower(localpart)), hs.userID(localpart)} {
		if u := hs.user(id); u != nil && !u.deactivated && u.password != "" && u.password == password {
			return u.id, nil
		}
	}
	return "", mxerr.Forbidden.WithMessage("The username or password was incorrect or the account does not exist.")
}
