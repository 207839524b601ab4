package fakes

// What Synapse's own 3PID table feeds besides its 3PID endpoints: addresses
// given at registration, e-mail pushers, the admin API's 3PID lookup, and the
// capability clients read before offering "Add e-mail".

import (
	"net/http"
	"slices"
	"time"

	"github.com/gorilla/mux"

	"github.com/threepidd/threepidd/mxerr"
)

// hsEmailPusherApp is the app_id of Synapse's e-mail pushers.
const hsEmailPusherApp = "m.email"

func hsEmailPusher(address string) HomeserverPusher {
	return HomeserverPusher{Kind: "email", AppID: hsEmailPusherApp, PushKey: address}
}

// RegisterWithEmail registers localpart with a password and an e-mail
// address validated at registration (m.login.email.identity), as Synapse's
// RegistrationHandler._register_email_threepid records it: the address,
// canonicalised, with validated_at and added_at now, taken from any other
// holder; and, with e-mail notifications for new users on (the fake's
// default), an "m.email" pusher for it. It returns the user ID.
func (hs *Homeserver) RegisterWithEmail(localpart, password, email string) string {
	hs.t.Helper()
	userID := hs.AddUser(localpart, password)
	canonical, err := hsCanonicalEmail(email)
	if err != nil {
		hs.t.Fatalf("fake homeserver: register %s with %q: %v", userID, email, err)
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	u := hs.user(userID)
	now := hsNowMS()
	hs.upsertThreepid(u, HomeserverThreepid{Medium: "email", Address: canonical, ValidatedAt: now, AddedAt: now})
	if hs.emailNotifsForNewUsers {
		u.pushers = append(u.pushers, hsEmailPusher(canonical))
	}
	return userID
}

// SetEmailNotifsForNewUsers sets whether addresses given at registration (or
// with users the admin PUT creates) get an e-mail pusher (default true).
func (hs *Homeserver) SetEmailNotifsForNewUsers(on bool) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.emailNotifsForNewUsers = on
}

// AddEmailPusher adds an e-mail pusher for address to userID, as Synapse's
// PusherPool.add_or_update_pusher does for POST /pushers/set with kind
// "email": only for an address the user holds in Synapse's own table, else
// 400 M_THREEPID_NOT_FOUND.
func (hs *Homeserver) AddEmailPusher(userID, address string) error {
	canonical, err := hsCanonicalEmail(address)
	if err != nil {
		return err
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.threepidOwner("email", canonical) != userID {
		return hsErr(http.StatusBadRequest, "M_THREEPID_NOT_FOUND", "Email not found")
	}
	u := hs.user(userID)
	if !slices.Contains(u.pushers, hsEmailPusher(address)) {
		u.pushers = append(u.pushers, hsEmailPusher(address))
	}
	return nil
}

// Pushers returns userID's pushers.
func (hs *Homeserver) Pushers(userID string) []HomeserverPusher {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if u := hs.user(userID); u != nil {
		return slices.Clone(u.pushers)
	}
	return nil
}

// Holder returns the user holding exactly (medium, address) in the fake's
// table, or "".
func (hs *Homeserver) Holder(medium, address string) string {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.threepidOwner(medium, address)
}

// AdminDeactivate deactivates userID as Synapse's admin API does (the state
// change of POST /_synapse/admin/v1/deactivate/{userId}), for tests that set
// up many accounts.
func (hs *Homeserver) AdminDeactivate(userID string) {
	hs.t.Helper()
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.user(userID) == nil {
		hs.t.Fatalf("fake homeserver: no user %s", userID)
	}
	hs.deactivate(userID)
}

// SetThreepidChanges sets Synapse's enable_3pid_changes, which /capabilities
// reports as m.3pid_changes (default true, as threepidd's README asks).
func (hs *Homeserver) SetThreepidChanges(on bool) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.threepidChanges = on
}

// serveAdminThreepidHolder is GET /_synapse/admin/v1/threepid/{medium}/users/{address}
// (UserByThreePid): {"user_id"} of exactly that (medium, address), 404
// M_NOT_FOUND when nobody holds it.
func (hs *Homeserver) serveAdminThreepidHolder(w http.ResponseWriter, r *http.Request) error {
	vars := mux.Vars(r)
	userID := hs.threepidOwner(vars["medium"], vars["address"])
	if userID == "" {
		return mxerr.NotFound.WithMessage("User not found")
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]string{"user_id": userID})
	return nil
}

// serveAdminPushers is GET /_synapse/admin/v1/users/{userId}/pushers.
func (hs *Homeserver) serveAdminPushers(w http.ResponseWriter, r *http.Request) error {
	u, err := hs.adminUser(r, "Can only look up local users")
	if err != nil {
		return err
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]any{"pushers": append([]HomeserverPusher{}, u.pushers...), "total": len(u.pushers)})
	return nil
}

// serveCapabilities is Synapse's GET /capabilities (CapabilitiesRestServlet),
// with the members Synapse always sends; guests allowed.
func (hs *Homeserver) serveCapabilities(w http.ResponseWriter, r *http.Request) error {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if _, err := hs.authenticate(r, true); err != nil {
		return err
	}
	enabled := func(on bool) map[string]bool { return map[string]bool{"enabled": on} }
	mxerr.WriteJSON(w, http.StatusOK, map[string]any{"capabilities": map[string]any{
		"m.room_versions":   map[string]any{"default": "10", "available": map[string]string{"10": "stable", "11": "stable"}},
		"m.change_password": enabled(true),
		"m.set_displayname": enabled(true),
		"m.set_avatar_url":  enabled(true),
		"m.3pid_changes":    enabled(hs.threepidChanges),
		"m.get_login_token": enabled(false),
		"m.profile_fields":  enabled(true),
		"org.matrix.msc4140.delayed_events": map[string]int64{
			"max_delay_ms": (24 * time.Hour).Milliseconds(), "max_scheduled": 100,
		},
	}})
	return nil
}
