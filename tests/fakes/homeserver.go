// Package fakes holds the test doubles threepidd's end-to-end tests talk to: a fake
// Matrix homeserver (Synapse's and Dendrite's answers where they matter), a fake
// identity server, an SMTP sink and an SMS webhook sink. Each listens on
// 127.0.0.1 with an OS-chosen port and stops when its test ends.
package fakes

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"

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
// endpoints taking sync tokens (/keys/changes, /messages, /members,
// /relations), and Synapse's admin users API.
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
	adminCallLimit     int // SetAdminCallLimit
	deleteDevicesCalls int
	syncCancellations  int

	events      []hsEvent
	pos         int64
	wake        chan struct{} // closed and replaced on every PushEvent
	syncPadding int
	syncGzip    bool

	down         bool
	unbindResult string

	// holders indexes every user's 3PIDs: Synapse's user_threepids is
	// unique on (medium, address).
	holders map[hsThreepidKey]*hsUser
	// population holds the computed users (SetPopulation).
	population Population
	// emailNotifsForNewUsers is Synapse's email.enable_notifs together with
	// email.notif_for_new_users: an e-mail given at registration (or with a
	// user the admin PUT creates) gets an "m.email" pusher.
	emailNotifsForNewUsers bool
	// threepidChanges is Synapse's enable_3pid_changes, as /capabilities
	// shows it (m.3pid_changes).
	threepidChanges bool
}

// hsThreepidKey is a 3PID as Synapse's table is keyed.
type hsThreepidKey struct{ medium, address string }

// HomeserverPusher is a pusher as Synapse's admin API lists it (the fields
// the fake models: e-mail pushers).
type HomeserverPusher struct {
	Kind    string `json:"kind"`
	AppID   string `json:"app_id"`
	PushKey string `json:"pushkey"`
}

type hsUser struct {
	id          string
	password    string // "" = cannot authenticate (guests, appservice senders, deactivated)
	guest       bool
	deactivated bool
	createdAt   int64 // seconds, as Synapse's creation_ts
	threepids   []HomeserverThreepid
	pushers     []HomeserverPusher
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
		holders:          map[hsThreepidKey]*hsUser{},

		emailNotifsForNewUsers: true,
		threepidChanges:        true,
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
	// Synapse's client_patterns: r0, v3 and unstable (testdata/routes).
	const client = "/_matrix/client/{version:(?:r0|v3|unstable)}"
	r.Handle("/_matrix/client/versions", hsHandler(hs.serveVersions)).Methods(http.MethodGet)
	r.Handle(client+"/account/whoami", hsHandler(hs.serveWhoami)).Methods(http.MethodGet)
	r.Handle(client+"/account/3pid/add", hsHandler(hs.serveThreepidAdd)).Methods(http.MethodPost)
	r.Handle(client+"/account/deactivate", hsHandler(hs.serveDeactivate)).Methods(http.MethodPost)
	r.Handle(client+"/devices/{deviceId}", hsHandler(hs.serveDeleteDevice)).Methods(http.MethodDelete)
	r.Handle(client+"/delete_devices", hsHandler(hs.serveDeleteDevices)).Methods(http.MethodPost)
	r.Handle(client+"/sync", hsHandler(hs.serveSync)).Methods(http.MethodGet)
	r.Handle(client+"/keys/changes", hsHandler(hs.serveKeyChanges)).Methods(http.MethodGet)
	r.Handle("/_matrix/client/{version:(?:api/v1|r0|v3|unstable)}/rooms/{roomId}/messages", hsHandler(hs.serveMessages)).Methods(http.MethodGet)
	r.Handle("/_matrix/client/{version:(?:api/v1|r0|v3|unstable)}/rooms/{roomId}/members", hsHandler(hs.serveMembers)).Methods(http.MethodGet)
	for _, tail := range []string{"", "/{relType}", "/{relType}/{eventType}"} {
		r.Handle("/_matrix/client/{version:(?:v1|unstable)}/rooms/{roomId}/relations/{eventId}"+tail, hsHandler(hs.serveRelations)).Methods(http.MethodGet)
	}
	r.Handle(client+"/capabilities", hsHandler(hs.serveCapabilities)).Methods(http.MethodGet)
	const admin = "/_synapse/admin/v2"
	r.Handle(admin+"/users", hs.admin(hs.serveAdminUsers)).Methods(http.MethodGet)
	r.Handle(admin+"/users/{userId}", hs.admin(hs.serveAdminUser)).Methods(http.MethodGet)
	r.Handle(admin+"/users/{userId}", hs.admin(hs.serveAdminPutUser)).Methods(http.MethodPut)
	const adminV1 = "/_synapse/admin/v1"
	r.Handle(adminV1+"/threepid/{medium}/users/{address}", hs.admin(hs.serveAdminThreepidHolder)).Methods(http.MethodGet)
	r.Handle(adminV1+"/deactivate/{userId}", hs.admin(hs.serveAdminDeactivate)).Methods(http.MethodPost)
	r.Handle(adminV1+"/users/{userId}/pushers", hs.admin(hs.serveAdminPushers)).Methods(http.MethodGet)
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

// serveVersions is GET /_matrix/client/versions (503 while SetDown).
func (hs *Homeserver) serveVersions(w http.ResponseWriter, r *http.Request) error {
	hs.mu.Lock()
	down := hs.down
	hs.mu.Unlock()
	if down {
		return hsErr(http.StatusServiceUnavailable, "M_UNKNOWN", "down for maintenance")
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]any{"versions": []string{"r0.6.1", "v1.1", "v1.11"}, "unstable_features": map[string]bool{}})
	return nil
}
