package demo

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/threepidd/threepidd/mxerr"
)

// maxStandInBody bounds the request bodies the homeserver stand-in reads.
const maxStandInBody = 64 << 10

// homeserver stands in for a Dendrite homeserver with one user: the calls
// threepidd makes to it (whoami, the UIA relay, /sync, the readiness check).
type homeserver struct {
	p          *printer
	serverName string
	user       user

	mu      sync.Mutex
	session int
	// longPolls receives a value each time a long-polling /sync arrives.
	longPolls chan struct{}
}

// user is the demo's one account.
type user struct {
	localpart, password, token, deviceID string
}

// userID is the user's Matrix ID on serverName.
func (u user) userID(serverName string) string { return "@" + u.localpart + ":" + serverName }

func newHomeserver(p *printer, serverName string, u user) *homeserver {
	return &homeserver{p: p, serverName: serverName, user: u, longPolls: make(chan struct{}, 1)}
}

func (hs *homeserver) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/client/versions", func(w http.ResponseWriter, r *http.Request) {
		mxerr.WriteJSON(w, http.StatusOK, map[string]any{"versions": []string{"v1.11"}})
	})
	mux.HandleFunc("GET /_matrix/client/v3/account/whoami", hs.whoami)
	mux.HandleFunc("DELETE /_matrix/client/v3/devices/{deviceId}", hs.deleteDevice)
	mux.HandleFunc("GET /_matrix/client/v3/sync", hs.sync)
	return mux
}

// authorized checks the bearer token, answering 401 as Dendrite does when it
// is not the user's.
func (hs *homeserver) authorized(w http.ResponseWriter, r *http.Request) bool {
	switch r.Header.Get("Authorization") {
	case "Bearer " + hs.user.token:
		return true
	case "":
		writeError(w, http.StatusUnauthorized, "M_MISSING_TOKEN", "missing access token")
	default:
		writeError(w, http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Unknown token")
	}
	return false
}

func (hs *homeserver) whoami(w http.ResponseWriter, r *http.Request) {
	if !hs.authorized(w, r) {
		return
	}
	hs.p.note("homeserver", "whoami for threepidd → %s", hs.user.userID(hs.serverName))
	mxerr.WriteJSON(w, http.StatusOK, map[string]any{
		"user_id": hs.user.userID(hs.serverName), "device_id": hs.user.deviceID, "is_guest": false,
	})
}

// deleteDevice is Dendrite's DELETE /devices/{id}, the call threepidd's UIA
// relay makes for kind dendrite: a 401 challenge for the password flow, then
// 200 once the password is right. The user has no such device, so nothing is
// deleted.
func (hs *homeserver) deleteDevice(w http.ResponseWriter, r *http.Request) {
	if !hs.authorized(w, r) {
		return
	}
	var body struct {
		Auth *struct {
			Type       string `json:"type"`
			Password   string `json:"password"`
			Identifier struct {
				User string `json:"user"`
			} `json:"identifier"`
		} `json:"auth"`
	}
	_ = json.NewDecoder(io.LimitReader(r.Body, maxStandInBody)).Decode(&body) // no body is a first call
	device := r.PathValue("deviceId")
	user := body.Auth != nil && (body.Auth.Identifier.User == hs.user.localpart || body.Auth.Identifier.User == hs.user.userID(hs.serverName))
	switch {
	case body.Auth == nil:
		hs.p.note("homeserver", "DELETE /devices/%s without auth → 401, password flow", device)
		mxerr.WriteJSON(w, http.StatusUnauthorized, hs.challenge(nil))
	case body.Auth.Type == "m.login.password" && user && body.Auth.Password == hs.user.password:
		hs.p.note("homeserver", "DELETE /devices/%s with the right password → 200 (no such device: nothing deleted)", device)
		mxerr.WriteJSON(w, http.StatusOK, struct{}{})
	default:
		hs.p.note("homeserver", "DELETE /devices/%s with a wrong password → 401", device)
		mxerr.WriteJSON(w, http.StatusUnauthorized, hs.challenge(map[string]any{
			"errcode": "M_FORBIDDEN", "error": "The username or password was incorrect or the account does not exist.",
		}))
	}
}

// challenge is a UIA 401 body with a new session, extra merged in.
func (hs *homeserver) challenge(extra map[string]any) map[string]any {
	hs.mu.Lock()
	hs.session++
	session := "demo-uia-session-" + strconv.Itoa(hs.session)
	hs.mu.Unlock()
	c := map[string]any{
		"completed": []any{}, "flows": []any{map[string]any{"stages": []string{"m.login.password"}}},
		"session": session, "params": map[string]any{},
	}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

// sync answers a /sync with nothing new: at once for an initial sync or a
// timeout of 0, else when the client's timeout passes or it leaves.
func (hs *homeserver) sync(w http.ResponseWriter, r *http.Request) {
	if !hs.authorized(w, r) {
		return
	}
	q := r.URL.Query()
	timeout, _ := strconv.Atoi(q.Get("timeout"))
	if q.Get("since") != "" && timeout > 0 {
		hs.p.note("homeserver", "long-polling /sync since %s from threepidd, waiting up to %d ms", q.Get("since"), timeout)
		select {
		case hs.longPolls <- struct{}{}:
		default:
		}
		t := time.NewTimer(time.Duration(timeout) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done(): // threepidd answered its client without us
			return
		}
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]any{
		"next_batch":   "s1_demo",
		"account_data": map[string]any{"events": []any{}},
		"presence":     map[string]any{"events": []any{}},
		"rooms":        map[string]any{"join": map[string]any{}, "invite": map[string]any{}, "leave": map[string]any{}},
	})
}

// writeError writes a Matrix error body.
func writeError(w http.ResponseWriter, status int, errcode, msg string) {
	mxerr.WriteJSON(w, status, map[string]string{"errcode": errcode, "error": msg})
}
