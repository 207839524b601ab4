// Package fakes holds the test doubles threepidd's end-to-end tests talk to: a fake
// Matrix homeserver (Synapse's and Dendrite's answers where they matter), a fake
// identity server, an SMTP sink and an SMS webhook sink. Each listens on
// 127.0.0.1 with an OS-chosen port and stops when its test ends.
package fakes

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"golang.org/x/text/cases"

	"github.com/threepidd/threepidd/mxerr"
)

const (
	// hsSyncTokenSuffix is the fixed tail of every stream token the fake issues.
	// Its `_`, `~` and `.` exercise token handling in clients and proxies.
	hsSyncTokenSuffix = "_34~x.0"
	// hsMaxSyncWait bounds a long-polling /sync whatever timeout the client asks for.
	hsMaxSyncWait = 30 * time.Second
	// hsUIASessionLifetime is Synapse's SESSION_EXPIRE_MS: a UIA session, completed
	// or not, can be continued (and a completed one replayed) for this long.
	hsUIASessionLifetime = 48 * time.Hour
	// hsGuestDeviceID is the device ID Synapse reports for every guest.
	hsGuestDeviceID = "guest_device"
	// hsPasswordStage is the only UIA stage the fake offers.
	hsPasswordStage = "m.login.password"
	// hsMaxBody bounds request bodies read by the fake.
	hsMaxBody = 1 << 20
	// hsPaddingField names the filler member SetSyncPadding adds to /sync bodies.
	hsPaddingField = "org.threepidd.fake_padding"
)

// HomeserverThreepid is a 3PID as Synapse's admin API shows it.
type HomeserverThreepid struct {
	Medium      string `json:"medium"`
	Address     string `json:"address"`
	ValidatedAt int64  `json:"validated_at"`
	AddedAt     int64  `json:"added_at"`
}

// RelayCall is one request the fake received on a user-interactive endpoint
// (account/3pid/add, account/deactivate, DELETE devices/{id}, delete_devices).
type RelayCall struct {
	Method string
	Path   string
	Body   []byte
}

// Homeserver is a fake Matrix homeserver: whoami, the user-interactive endpoints
// threepidd relays to (with Synapse's and Dendrite's UIA answers), /sync and the
// endpoints taking sync tokens, and Synapse's admin users API.
type Homeserver struct {
	t          testing.TB
	serverName string
	srv        *httptest.Server
	closing    chan struct{}

	mu          sync.Mutex
	users       map[string]*hsUser
	tokens      map[string]*hsToken
	appservices map[string]string // appservice token → sender user ID
	adminToken  string
	nextGuest   int

	synapseSessions  map[string]*hsSynapseSession
	dendriteSessions map[string]bool   // Dendrite UserInteractive.Sessions
	deviceToDelete   map[string]string // Dendrite: UIA session → the device it was started for

	lastHeaders        map[string]http.Header
	relayCalls         []RelayCall
	queries            map[string][]url.Values
	whoamiCalls        int
	adminCalls         int
	deleteDevicesCalls int
	syncCancellations  int

	events      []hsEvent
	pos         int64
	wake        chan struct{} // closed and replaced on every PushEvent
	syncPadding int
	syncGzip    bool

	down         bool
	unbindResult string
}

type hsUser struct {
	id          string
	password    string // "" = cannot authenticate (guests, appservice senders, deactivated)
	guest       bool
	deactivated bool
	createdAt   int64 // seconds, as Synapse's creation_ts
	threepids   []HomeserverThreepid
}

type hsToken struct {
	userID     string
	deviceID   string
	softLogout bool
}

type hsSynapseSession struct {
	uri, method string
	created     time.Time
	validated   string // the user that completed m.login.password; "" until then
}

type hsRequester struct {
	userID     string
	deviceID   string
	guest      bool
	appservice bool
}

type hsEvent struct {
	pos    int64
	userID string
	event  json.RawMessage
}

// hsChallenge is a UIA 401 answer: flows, session, params and possibly an error.
type hsChallenge struct{ body map[string]any }

func (c *hsChallenge) Error() string {
	return fmt.Sprintf("user-interactive auth incomplete: %v", c.body)
}

// hsHandler is a handler that returns its error; ServeHTTP renders it.
type hsHandler func(w http.ResponseWriter, r *http.Request) error

func (h hsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	err := h(w, r)
	var c *hsChallenge
	switch {
	case err == nil:
	case errors.As(err, &c):
		mxerr.WriteJSON(w, http.StatusUnauthorized, c.body)
	default:
		mxerr.Write(w, r, err)
	}
}

func hsErr(status int, errcode, format string, args ...any) *mxerr.Error {
	return &mxerr.Error{Status: status, ErrCode: errcode, Message: fmt.Sprintf(format, args...)}
}

// NewHomeserver starts a fake homeserver for serverName on 127.0.0.1; it stops
// when the test ends.
func NewHomeserver(t testing.TB, serverName string) *Homeserver {
	t.Helper()
	hs := &Homeserver{
		t:                t,
		serverName:       serverName,
		closing:          make(chan struct{}),
		users:            map[string]*hsUser{},
		tokens:           map[string]*hsToken{},
		appservices:      map[string]string{},
		synapseSessions:  map[string]*hsSynapseSession{},
		dendriteSessions: map[string]bool{},
		deviceToDelete:   map[string]string{},
		lastHeaders:      map[string]http.Header{},
		queries:          map[string][]url.Values{},
		wake:             make(chan struct{}),
		unbindResult:     "success",
	}
	hs.srv = httptest.NewServer(hs.routes())
	t.Cleanup(func() {
		close(hs.closing) // wakes long-polls so Close does not wait for them
		hs.srv.Close()
	})
	return hs
}

func (hs *Homeserver) routes() http.Handler {
	r := mux.NewRouter()
	r.SkipClean(true)
	const client = "/_matrix/client/{version:(?:r0|v3)}"
	r.Handle(client+"/account/whoami", hsHandler(hs.serveWhoami)).Methods(http.MethodGet)
	r.Handle(client+"/account/3pid/add", hsHandler(hs.serveThreepidAdd)).Methods(http.MethodPost)
	r.Handle(client+"/account/deactivate", hsHandler(hs.serveDeactivate)).Methods(http.MethodPost)
	r.Handle(client+"/devices/{deviceId}", hsHandler(hs.serveDeleteDevice)).Methods(http.MethodDelete)
	r.Handle(client+"/delete_devices", hsHandler(hs.serveDeleteDevices)).Methods(http.MethodPost)
	r.Handle(client+"/sync", hsHandler(hs.serveSync)).Methods(http.MethodGet)
	r.Handle(client+"/keys/changes", hsHandler(hs.serveKeyChanges)).Methods(http.MethodGet)
	r.Handle(client+"/rooms/{roomId}/messages", hsHandler(hs.serveMessages)).Methods(http.MethodGet)
	const admin = "/_synapse/admin/v2"
	r.Handle(admin+"/users", hs.admin(hs.serveAdminUsers)).Methods(http.MethodGet)
	r.Handle(admin+"/users/{userId}", hs.admin(hs.serveAdminUser)).Methods(http.MethodGet)
	r.Handle(admin+"/users/{userId}", hs.admin(hs.serveAdminPutUser)).Methods(http.MethodPut)
	r.NotFoundHandler = hsHandler(func(http.ResponseWriter, *http.Request) error { return mxerr.Unrecognized })
	r.MethodNotAllowedHandler = hsHandler(func(http.ResponseWriter, *http.Request) error { return mxerr.MethodNotAllowed })
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		hs.mu.Lock()
		hs.lastHeaders[req.URL.Path] = req.Header.Clone()
		hs.mu.Unlock()
		r.ServeHTTP(w, req)
	})
}

// URL is the base URL of the fake, e.g. http://127.0.0.1:41234.
func (hs *Homeserver) URL() string { return hs.srv.URL }

// ServerName is the server name the fake's user IDs end in.
func (hs *Homeserver) ServerName() string { return hs.serverName }

func (hs *Homeserver) userID(localpart string) string { return "@" + localpart + ":" + hs.serverName }

func (hs *Homeserver) isLocal(userID string) bool {
	return strings.HasPrefix(userID, "@") && strings.HasSuffix(userID, ":"+hs.serverName)
}

func hsNowMS() int64 { return time.Now().UnixMilli() }

// AddUser registers a local user with a password and returns its user ID.
func (hs *Homeserver) AddUser(localpart, password string) (userID string) {
	hs.t.Helper()
	hs.mu.Lock()
	defer hs.mu.Unlock()
	userID = hs.userID(localpart)
	if _, ok := hs.users[userID]; ok {
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
	u := hs.users[userID]
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
	if hs.users[sender] == nil {
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
	if tok := hs.tokens[token]; tok != nil {
		tok.softLogout = true
	}
}

// TokenValid reports whether a request with token would be authenticated.
func (hs *Homeserver) TokenValid(token string) bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	tok := hs.tokens[token]
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

// WhoamiCalls counts the requests to /account/whoami, answered or refused.
func (hs *Homeserver) WhoamiCalls() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.whoamiCalls
}

// LastHeaders returns the headers of the last request to path (the URL path,
// e.g. /_matrix/client/v3/account/whoami), or nil if there was none.
func (hs *Homeserver) LastHeaders(path string) http.Header {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.lastHeaders[path].Clone()
}

// RelayCalls lists the requests to the user-interactive endpoints, in order.
func (hs *Homeserver) RelayCalls() []RelayCall {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return slices.Clone(hs.relayCalls)
}

// DeleteDevicesCalls counts the requests to POST /delete_devices.
func (hs *Homeserver) DeleteDevicesCalls() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.deleteDevicesCalls
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
		case hs.users[userID] == nil:
			return hsRequester{}, mxerr.Forbidden.WithMessage("Application service has not registered this user (%s)", userID)
		}
		return hsRequester{userID: userID, appservice: true}, nil
	}
	tok := hs.tokens[token]
	if tok == nil {
		return hsRequester{}, mxerr.UnknownToken.WithMessage("Invalid access token passed.").WithExtra("soft_logout", false)
	}
	if tok.softLogout {
		return hsRequester{}, mxerr.UnknownToken.WithMessage("Access token has expired").WithExtra("soft_logout", true)
	}
	u := hs.users[tok.userID]
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
	if u := hs.users[userID]; u != nil {
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

func (hs *Homeserver) threepidOwner(medium, address string) string {
	for _, u := range hs.users {
		for _, tp := range u.threepids {
			if tp.Medium == medium && tp.Address == address {
				return u.id
			}
		}
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
		if u := hs.users[id]; u != nil && !u.deactivated && u.password != "" && u.password == password {
			return u.id, nil
		}
	}
	return "", mxerr.Forbidden.WithMessage("The username or password was incorrect or the account does not exist.")
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

// Query-log keys for the endpoints that take stream tokens.
const (
	hsQueriesSync       = "sync"
	hsQueriesKeyChanges = "keys/changes"
	hsQueriesMessages   = "messages"
)

// PushEvent appends event to userID's stream; a /sync of that user that is
// waiting returns at once with it.
func (hs *Homeserver) PushEvent(userID string, event json.RawMessage) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.pos++
	hs.events = append(hs.events, hsEvent{pos: hs.pos, userID: userID, event: slices.Clone(event)})
	close(hs.wake)
	hs.wake = make(chan struct{})
}

// SetSyncPadding makes /sync bodies at least size bytes long (before
// compression) by adding a filler member; 0 turns it off.
func (hs *Homeserver) SetSyncPadding(size int) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.syncPadding = size
}

// SetSyncGzip makes /sync answer gzip-compressed bodies to clients that send
// Accept-Encoding: gzip.
func (hs *Homeserver) SetSyncGzip(on bool) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.syncGzip = on
}

// SyncRequests lists the query parameters of every /sync request, in order.
func (hs *Homeserver) SyncRequests() []url.Values { return hs.queriesOf(hsQueriesSync) }

// KeyChangesRequests lists the query parameters of every /keys/changes request.
func (hs *Homeserver) KeyChangesRequests() []url.Values { return hs.queriesOf(hsQueriesKeyChanges) }

// MessagesRequests lists the query parameters of every /rooms/{roomId}/messages request.
func (hs *Homeserver) MessagesRequests() []url.Values { return hs.queriesOf(hsQueriesMessages) }

func (hs *Homeserver) queriesOf(key string) []url.Values {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	out := make([]url.Values, len(hs.queries[key]))
	for i, q := range hs.queries[key] {
		out[i] = maps.Clone(q)
	}
	return out
}

// SyncCancellations counts long-polling /sync requests the client abandoned
// before the fake answered.
func (hs *Homeserver) SyncCancellations() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.syncCancellations
}

// begin records the query under key and authenticates the request (guests allowed).
func (hs *Homeserver) begin(r *http.Request, key string) (req hsRequester, current int64, err error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.queries[key] = append(hs.queries[key], r.URL.Query())
	req, err = hs.authenticate(r, true)
	return req, hs.pos, err
}

func hsSyncToken(pos int64) string { return "s" + strconv.FormatInt(pos, 10) + hsSyncTokenSuffix }

// hsTopoToken is the pagination token /messages answers as "end".
func hsTopoToken(pos int64) string { return "t1-" + strconv.FormatInt(pos, 10) + hsSyncTokenSuffix }

// hsParseSyncToken reads a token made by hsSyncToken, valid up to current.
func hsParseSyncToken(token string, current int64) (int64, bool) {
	rest, ok := strings.CutPrefix(token, "s")
	if !ok {
		return 0, false
	}
	digits, ok := strings.CutSuffix(rest, hsSyncTokenSuffix)
	if !ok {
		return 0, false
	}
	pos, err := strconv.ParseUint(digits, 10, 63)
	return int64(pos), err == nil && int64(pos) <= current
}

// hsValidPagination accepts a sync token or a token made by hsTopoToken.
func hsValidPagination(token string, current int64) bool {
	if _, ok := hsParseSyncToken(token, current); ok {
		return true
	}
	rest, ok := strings.CutPrefix(token, "t")
	if !ok {
		return false
	}
	topo, stream, ok := strings.Cut(rest, "-")
	if _, err := strconv.ParseUint(topo, 10, 63); err != nil || !ok {
		return false
	}
	_, ok = hsParseSyncToken("s"+stream, current)
	return ok
}

var hsInvalidStreamToken = hsErr(http.StatusBadRequest, "M_UNKNOWN", "Invalid stream token")

// hsQueryInt is Synapse's parse_integer for a non-negative query parameter.
func hsQueryInt(q url.Values, name string, def int) (int, error) {
	if !q.Has(name) {
		return def, nil
	}
	n, err := strconv.Atoi(q.Get(name))
	if err != nil {
		return 0, mxerr.InvalidParam.WithMessage("Query parameter %q must be an integer.", name)
	}
	if n < 0 {
		return 0, mxerr.InvalidParam.WithMessage("Query parameter %q must be a positive integer.", name)
	}
	return n, nil
}

// hsQueryBool is Synapse's parse_boolean.
func hsQueryBool(q url.Values, name string, def bool) (bool, error) {
	switch q.Get(name) {
	case "":
		return def, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, mxerr.InvalidParam.WithMessage("Boolean query parameter %q must be one of ['true', 'false']", name)
}

// serveSync answers at once on an initial sync or when the user has events
// after since; otherwise it waits for PushEvent up to timeout (at most
// hsMaxSyncWait) and answers with no events.
func (hs *Homeserver) serveSync(w http.ResponseWriter, r *http.Request) error {
	req, current, err := hs.begin(r, hsQueriesSync)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	var since int64
	initial := q.Get("since") == ""
	if !initial {
		var ok bool
		if since, ok = hsParseSyncToken(q.Get("since"), current); !ok {
			return hsInvalidStreamToken
		}
	}
	timeoutMS, err := hsQueryInt(q, "timeout", 0)
	if err != nil {
		return err
	}
	deadline := time.NewTimer(min(time.Duration(timeoutMS)*time.Millisecond, hsMaxSyncWait))
	defer deadline.Stop()
	expired := false
	for {
		hs.mu.Lock()
		events, pos, wake := hs.eventsSince(req.userID, since), hs.pos, hs.wake
		hs.mu.Unlock()
		if len(events) > 0 || initial || expired {
			return hs.writeSync(w, r, pos, events)
		}
		select {
		case <-wake:
		case <-deadline.C:
			expired = true
		case <-hs.closing:
			expired = true
		case <-r.Context().Done():
			hs.mu.Lock()
			hs.syncCancellations++
			hs.mu.Unlock()
			return nil
		}
	}
}

// eventsSince lists userID's events after position since. hs.mu must be held.
func (hs *Homeserver) eventsSince(userID string, since int64) []json.RawMessage {
	var out []json.RawMessage
	for _, e := range hs.events {
		if e.pos > since && e.userID == userID {
			out = append(out, e.event)
		}
	}
	return out
}

func (hs *Homeserver) writeSync(w http.ResponseWriter, r *http.Request, pos int64, events []json.RawMessage) error {
	join := map[string]any{}
	if len(events) > 0 {
		join["!fake:"+hs.serverName] = map[string]any{"timeline": map[string]any{"events": events, "limited": false}}
	}
	body, err := json.Marshal(map[string]any{
		"next_batch":   hsSyncToken(pos),
		"account_data": map[string]any{"events": []any{}},
		"rooms":        map[string]any{"join": join},
	})
	if err != nil {
		return fmt.Errorf("encode sync response: %w", err)
	}
	hs.mu.Lock()
	padding, gz := hs.syncPadding, hs.syncGzip
	hs.mu.Unlock()
	body = hsPad(body, padding)
	if gz && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		if _, err := zw.Write(body); err != nil {
			return fmt.Errorf("gzip sync response: %w", err)
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("gzip sync response: %w", err)
		}
		body = buf.Bytes()
		w.Header().Set("Content-Encoding", "gzip")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return nil
}

// hsPad grows a JSON object to size bytes with a filler member, if it is shorter.
func hsPad(body []byte, size int) []byte {
	head := `,"` + hsPaddingField + `":"`
	filler := size - len(body) - len(head) - 1
	if size <= len(body) || filler < 0 {
		return body
	}
	out := make([]byte, 0, size)
	out = append(out, body[:len(body)-1]...)
	out = append(out, head...)
	out = append(out, bytes.Repeat([]byte("x"), filler)...)
	return append(out, `"}`...)
}

// serveKeyChanges is GET /keys/changes: from is required, to optional; both
// must be stream tokens this fake issued.
func (hs *Homeserver) serveKeyChanges(w http.ResponseWriter, r *http.Request) error {
	_, current, err := hs.begin(r, hsQueriesKeyChanges)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if !q.Has("from") {
		return mxerr.MissingParam.WithMessage("Missing string query parameter 'from'")
	}
	for _, name := range []string{"from", "to"} {
		if _, ok := hsParseSyncToken(q.Get(name), current); q.Has(name) && !ok {
			return hsInvalidStreamToken
		}
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string][]string{"changed": {}, "left": {}})
	return nil
}

// serveMessages is GET /rooms/{roomId}/messages: from, when given, must be a
// sync token or a pagination token this fake issued. The room is always empty.
func (hs *Homeserver) serveMessages(w http.ResponseWriter, r *http.Request) error {
	_, current, err := hs.begin(r, hsQueriesMessages)
	if err != nil {
		return err
	}
	from := r.URL.Query().Get("from")
	switch {
	case from == "":
		from = hsSyncToken(current)
	case !hsValidPagination(from, current):
		return hsInvalidStreamToken
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]any{"chunk": []any{}, "start": from, "end": hsTopoToken(current)})
	return nil
}

// SetAdminToken sets the bearer token the Synapse admin API accepts. It belongs
// to no listed user; a valid user token that is not it gets 403.
func (hs *Homeserver) SetAdminToken(token string) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.adminToken = token
}

// SetDown makes every admin API call answer 503 M_UNKNOWN while down is true.
func (hs *Homeserver) SetDown(down bool) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.down = down
}

// AdminCalls counts the requests to the admin API, answered or refused.
func (hs *Homeserver) AdminCalls() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.adminCalls
}

// SetThreepids replaces userID's 3PIDs as given (no canonicalisation); zero
// timestamps become now. An address another user holds moves to userID, as
// Synapse's (medium, address) upsert does.
func (hs *Homeserver) SetThreepids(userID string, threepids []HomeserverThreepid) {
	hs.t.Helper()
	hs.mu.Lock()
	defer hs.mu.Unlock()
	u := hs.users[userID]
	if u == nil {
		hs.t.Fatalf("fake homeserver: no user %s", userID)
	}
	u.threepids = nil
	now := hsNowMS()
	for _, tp := range threepids {
		if tp.AddedAt == 0 {
			tp.AddedAt = now
		}
		if tp.ValidatedAt == 0 {
			tp.ValidatedAt = now
		}
		hs.upsertThreepid(u, tp)
	}
}

// Threepids returns userID's 3PIDs in the order Synapse would list them.
func (hs *Homeserver) Threepids(userID string) []HomeserverThreepid {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if u := hs.users[userID]; u != nil {
		return slices.Clone(u.threepids)
	}
	return nil
}

// upsertThreepid gives tp to u, taking it from whoever held it. hs.mu must be held.
func (hs *Homeserver) upsertThreepid(u *hsUser, tp HomeserverThreepid) {
	for _, other := range hs.users {
		other.threepids = slices.DeleteFunc(other.threepids, func(x HomeserverThreepid) bool {
			return x.Medium == tp.Medium && x.Address == tp.Address
		})
	}
	u.threepids = append(u.threepids, tp)
}

// admin wraps an admin API handler: SetDown, then Synapse's admin auth (missing
// or unknown token → 401, a non-admin user's token → 403).
func (hs *Homeserver) admin(h hsHandler) http.Handler {
	return hsHandler(func(w http.ResponseWriter, r *http.Request) error {
		hs.mu.Lock()
		defer hs.mu.Unlock()
		hs.adminCalls++
		if hs.down {
			return hsErr(http.StatusServiceUnavailable, "M_UNKNOWN", "Service unavailable")
		}
		token, err := hsAccessToken(r)
		if err != nil {
			return err
		}
		if hs.adminToken == "" || token != hs.adminToken {
			if _, err := hs.requesterFor(r, token, false); err != nil {
				return err
			}
			return mxerr.Forbidden.WithMessage("You are not a server admin")
		}
		return h(w, r)
	})
}

// listEntry is the user as GET /_synapse/admin/v2/users lists it (Synapse ≥ 1.97:
// booleans, not 0/1).
func (u *hsUser) listEntry() map[string]any {
	return map[string]any{
		"name": u.id, "user_type": nil, "is_guest": u.guest, "admin": false,
		"deactivated": u.deactivated, "shadow_banned": false, "displayname": nil,
		"avatar_url": nil, "creation_ts": u.createdAt, "erased": false,
		"last_seen_ts": nil, "locked": false,
	}
}

// details is the user as GET /_synapse/admin/v2/users/{userId} shows it.
func (u *hsUser) details() map[string]any {
	d := u.listEntry()
	d["appservice_id"], d["consent_server_notice_sent"], d["consent_version"], d["consent_ts"] = nil, nil, nil, nil
	d["suspended"] = false
	d["threepids"] = append([]HomeserverThreepid{}, u.threepids...)
	d["external_ids"] = []any{}
	return d
}

// serveAdminUsers is GET /_synapse/admin/v2/users: ordered by name, guests
// included unless guests=false, deactivated users only with deactivated=true.
func (hs *Homeserver) serveAdminUsers(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	from, err := hsQueryInt(q, "from", 0)
	if err != nil {
		return err
	}
	limit, err := hsQueryInt(q, "limit", 100)
	if err != nil {
		return err
	}
	guests, err := hsQueryBool(q, "guests", true)
	if err != nil {
		return err
	}
	deactivated, err := hsQueryBool(q, "deactivated", false)
	if err != nil {
		return err
	}
	var ids []string
	for id, u := range hs.users {
		if (guests || !u.guest) && (deactivated || !u.deactivated) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	total := len(ids)
	page := ids[min(from, total):min(from+limit, total)]
	users := make([]map[string]any, len(page))
	for i, id := range page {
		users[i] = hs.users[id].listEntry()
	}
	resp := map[string]any{"users": users, "total": total}
	if from+limit < total {
		resp["next_token"] = strconv.Itoa(from + len(page))
	}
	mxerr.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// adminTarget checks the {userId} of an admin path as Synapse's UserID.from_string
// and is_mine do.
func (hs *Homeserver) adminTarget(r *http.Request, notLocal string) (string, error) {
	userID := mux.Vars(r)["userId"]
	if !strings.HasPrefix(userID, "@") || !strings.Contains(userID, ":") {
		return "", mxerr.InvalidParam.WithMessage("Invalid user id: %q", userID)
	}
	if !hs.isLocal(userID) {
		return "", hsErr(http.StatusBadRequest, "M_UNKNOWN", "%s", notLocal)
	}
	return userID, nil
}

// serveAdminUser is GET /_synapse/admin/v2/users/{userId}.
func (hs *Homeserver) serveAdminUser(w http.ResponseWriter, r *http.Request) error {
	userID, err := hs.adminTarget(r, "Can only look up local users")
	if err != nil {
		return err
	}
	u := hs.users[userID]
	if u == nil {
		return mxerr.NotFound.WithMessage("User not found")
	}
	mxerr.WriteJSON(w, http.StatusOK, u.details())
	return nil
}

// serveAdminPutUser is PUT /_synapse/admin/v2/users/{userId}, threepids only
// (other fields are ignored). An unknown user is created (201), as in Synapse.
func (hs *Homeserver) serveAdminPutUser(w http.ResponseWriter, r *http.Request) error {
	userID, err := hs.adminTarget(r, "This endpoint can only be used with local users")
	if err != nil {
		return err
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, hsMaxBody))
	if err != nil {
		return fmt.Errorf("read request body: %w", err)
	}
	body, err := hsJSONObject(raw)
	if err != nil {
		return err
	}
	wanted, err := hsWantedThreepids(body["threepids"])
	if err != nil {
		return err
	}
	status, u := http.StatusOK, hs.users[userID]
	if u == nil {
		status, u = http.StatusCreated, &hsUser{id: userID, createdAt: time.Now().Unix()}
		hs.users[userID] = u
	}
	if wanted != nil {
		if err := hs.replaceThreepids(u, wanted); err != nil {
			return err
		}
	}
	mxerr.WriteJSON(w, status, u.details())
	return nil
}

// hsWantedThreepids reads the "threepids" of a PUT body: nil when absent.
func hsWantedThreepids(v any) ([]HomeserverThreepid, error) {
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, mxerr.BadJSON.WithMessage("threepids must be a list")
	}
	wanted := make([]HomeserverThreepid, 0, len(list))
	for _, item := range list {
		obj, _ := item.(map[string]any)
		medium, okM := obj["medium"].(string)
		address, okA := obj["address"].(string)
		var absent []string
		if !okM {
			absent = append(absent, "'medium'")
		}
		if !okA {
			absent = append(absent, "'address'")
		}
		if len(absent) > 0 {
			return nil, mxerr.MissingParam.WithMessage("Missing params: [%s]", strings.Join(absent, ", "))
		}
		wanted = append(wanted, HomeserverThreepid{Medium: medium, Address: address})
	}
	return wanted, nil
}

// replaceThreepids is Synapse's UserRestServletV2 threepid update: the diff is
// taken on the (medium, address) pairs as sent; pairs already held keep their
// added_at/validated_at; removed ones are deleted (Synapse also removes their
// email pusher and tries to unbind them from identity servers); new ones get
// now as both timestamps and are taken from any other holder. E-mail addresses
// are canonicalised on add and delete. hs.mu must be held.
func (hs *Homeserver) replaceThreepids(u *hsUser, wanted []HomeserverThreepid) error {
	same := func(a, b HomeserverThreepid) bool { return a.Medium == b.Medium && a.Address == b.Address }
	for _, cur := range slices.Clone(u.threepids) {
		if slices.ContainsFunc(wanted, func(w HomeserverThreepid) bool { return same(w, cur) }) {
			continue
		}
		if cur.Medium == "email" {
			canonical, err := hsCanonicalEmail(cur.Address)
			if err != nil {
				return err
			}
			cur.Address = canonical
		}
		u.threepids = slices.DeleteFunc(u.threepids, func(x HomeserverThreepid) bool { return same(x, cur) })
	}
	held := slices.Clone(u.threepids)
	now := hsNowMS()
	for _, tp := range wanted {
		if slices.ContainsFunc(held, func(h HomeserverThreepid) bool { return same(h, tp) }) {
			continue
		}
		switch tp.Medium {
		case "email":
			canonical, err := hsCanonicalEmail(tp.Address)
			if err != nil {
				return err
			}
			tp.Address = canonical
		case "msisdn":
		default:
			return mxerr.InvalidParam.WithMessage("'%s' is not a valid value for 'medium'", tp.Medium)
		}
		tp.AddedAt, tp.ValidatedAt = now, now
		hs.upsertThreepid(u, tp)
		held = append(held, tp)
	}
	return nil
}
