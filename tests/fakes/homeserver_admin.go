package fakes

// Synapse's admin API: the user list, a user's details and PUT of its 3PIDs.

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/outbound"
)

// SetAdminToken sets the bearer token the Synapse admin API accepts. It belongs
// to no listed user; a valid user token that is not it gets 403.
func (hs *Homeserver) SetAdminToken(token string) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.adminToken = token
}

// AdminClient sets token as the admin token and returns threepidd's client of
// the fake's Synapse admin API authenticated with it.
func (hs *Homeserver) AdminClient(token string) *homeserver.SynapseAdmin {
	hs.t.Helper()
	hs.SetAdminToken(token)
	c, err := homeserver.New(config.Homeserver{URL: hs.URL(), Kind: config.KindSynapse}, outbound.NewTransport())
	if err != nil {
		hs.t.Fatal(err)
	}
	return c.SynapseAdmin(token)
}

// SetDown makes every admin API call and GET /_matrix/client/versions answer
// 503 M_UNKNOWN while down is true.
func (hs *Homeserver) SetDown(down bool) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.down = down
}

// SetAdminCallLimit makes every admin API call after the n-th (counting
// from the fake's start, as AdminCalls does) answer as SetDown does; 0
// lifts the limit. It interrupts a walk over the users at a known point.
func (hs *Homeserver) SetAdminCallLimit(n int) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.adminCallLimit = n
}

// SetThreepids replaces userID's 3PIDs as given (no canonicalisation); zero
// timestamps become now. An address another user holds moves to userID, as
// Synapse's (medium, address) upsert does.
func (hs *Homeserver) SetThreepids(userID string, threepids []HomeserverThreepid) {
	hs.t.Helper()
	hs.mu.Lock()
	defer hs.mu.Unlock()
	u := hs.user(userID)
	if u == nil {
		hs.t.Fatalf("fake homeserver: no user %s", userID)
	}
	for _, tp := range slices.Clone(u.threepids) {
		hs.dropThreepid(u, tp.Medium, tp.Address)
	}
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
	if u := hs.user(userID); u != nil {
		return slices.Clone(u.threepids)
	}
	return nil
}

// upsertThreepid gives tp to u, taking it from whoever held it, as Synapse's
// upsert on (medium, address) does. hs.mu must be held.
func (hs *Homeserver) upsertThreepid(u *hsUser, tp HomeserverThreepid) {
	if holder := hs.holders[hsThreepidKey{tp.Medium, tp.Address}]; holder != nil {
		hs.dropThreepid(holder, tp.Medium, tp.Address)
	}
	u.threepids = append(u.threepids, tp)
	hs.holders[hsThreepidKey{tp.Medium, tp.Address}] = u
}

// dropThreepid removes (medium, address) from u, exactly as spelled, and its
// "m.email" pusher, as Synapse's delete_local_threepid does. hs.mu must be held.
func (hs *Homeserver) dropThreepid(u *hsUser, medium, address string) {
	u.threepids = slices.DeleteFunc(u.threepids, func(x HomeserverThreepid) bool {
		return x.Medium == medium && x.Address == address
	})
	if hs.holders[hsThreepidKey{medium, address}] == u {
		delete(hs.holders, hsThreepidKey{medium, address})
	}
	if medium == "email" {
		u.pushers = slices.DeleteFunc(u.pushers, func(p HomeserverPusher) bool {
			return p.AppID == hsEmailPusherApp && p.PushKey == address
		})
	}
}

// admin wraps an admin API handler: SetDown, then Synapse's admin auth (missing
// or unknown token → 401, a non-admin user's token → 403).
func (hs *Homeserver) admin(h hsHandler) http.Handler {
	return hsHandler(func(w http.ResponseWriter, r *http.Request) error {
		hs.mu.Lock()
		defer hs.mu.Unlock()
		hs.adminCalls++
		if hs.down || (hs.adminCallLimit > 0 && hs.adminCalls > hs.adminCallLimit) {
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
	if _, err := hsQueryBool(q, "locked", false); err != nil { // the fake has no locked users
		return err
	}
	var ids []string
	for id, u := range hs.users {
		if _, pop := hs.populationIndex(id); !pop && (guests || !u.guest) && (deactivated || !u.deactivated) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	// The population comes first, computed a page at a time.
	computed := hs.population.Users
	total := computed + len(ids)
	users := []map[string]any{}
	for n := min(from, total); n < min(from+limit, total); n++ {
		if n < computed {
			users = append(users, hs.peekUser(hs.userID(hs.population.Localpart(n))).listEntry())
		} else {
			users = append(users, hs.users[ids[n-computed]].listEntry())
		}
	}
	resp := map[string]any{"users": users, "total": total}
	if from+limit < total {
		resp["next_token"] = strconv.Itoa(from + len(users))
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

// adminUser is the user an admin path names, 404 M_NOT_FOUND when unknown.
func (hs *Homeserver) adminUser(r *http.Request, notLocal string) (*hsUser, error) {
	userID, err := hs.adminTarget(r, notLocal)
	if err != nil {
		return nil, err
	}
	u := hs.peekUser(userID)
	if u == nil {
		return nil, mxerr.NotFound.WithMessage("User not found")
	}
	return u, nil
}

// serveAdminUser is GET /_synapse/admin/v2/users/{userId}.
func (hs *Homeserver) serveAdminUser(w http.ResponseWriter, r *http.Request) error {
	u, err := hs.adminUser(r, "Can only look up local users")
	if err != nil {
		return err
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
	status, u := http.StatusOK, hs.user(userID)
	if u == nil {
		status, u = http.StatusCreated, &hsUser{id: userID, createdAt: time.Now().Unix()}
		hs.users[userID] = u
	}
	if wanted != nil {
		if err := hs.replaceThreepids(u, wanted); err != nil {
			return err
		}
	}
	if status == http.StatusCreated && hs.emailNotifsForNewUsers {
		// Only a user the PUT creates gets e-mail pushers (UserRestServletV2.on_PUT).
		for _, tp := range u.threepids {
			if tp.Medium == "email" {
				u.pushers = append(u.pushers, hsEmailPusher(tp.Address))
			}
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
		hs.dropThreepid(u, cur.Medium, cur.Address)
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
