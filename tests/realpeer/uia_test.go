//go:build realpeer

package realpeer

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"
)

// passwordFlows is the only UIA flow Dendrite offers.
var passwordFlows = []any{map[string]any{"stages": []any{"m.login.password"}}}

// TestDendriteUIARelay records how Dendrite answers the call that threepidd's
// UIA relay makes for kind dendrite, DELETE /_matrix/client/v3/devices/<random
// id>, for each kind of auth dict a client may send, and proves that the call
// leaves the caller's token and devices alone. FINDINGS.md has the bodies.
func TestDendriteUIARelay(t *testing.T) {
	ctx := ContextOf(t)
	d := StartDendrite(ctx, t, env)
	alice := mustRegister(ctx, t, d, "alice", "alice-password")
	if _, err := d.Login(ctx, "alice", "alice-password"); err != nil {
		t.Fatal(err) // a second device, so "devices unchanged" means something
	}
	mustRegister(ctx, t, d, "bob", "bob-password")
	devicesBefore := deviceIDs(ctx, t, d, alice.AccessToken)
	if len(devicesBefore) != 2 {
		t.Fatalf("alice has devices %v, want 2", devicesBefore)
	}

	password := func(user, pw, session string) map[string]any {
		auth := map[string]any{
			"type":       "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": user},
			"password":   pw,
		}
		if session != "" {
			auth["session"] = session
		}
		return map[string]any{"auth": auth}
	}
	tests := []struct {
		name string
		// body builds the request body; session is a fresh UIA session that
		// Dendrite issued for the same device ID, other one issued for
		// another device ID.
		body        func(session, other string) any
		wantStatus  int
		wantErrcode string // "" for none
		// wantChallenge: the body carries flows, session, completed, params.
		wantChallenge bool
	}{
		{
			name:          "no body",
			body:          func(_, _ string) any { return nil },
			wantStatus:    http.StatusUnauthorized,
			wantChallenge: true,
		},
		{
			name:          "no auth",
			body:          func(_, _ string) any { return map[string]any{} },
			wantStatus:    http.StatusUnauthorized,
			wantChallenge: true,
		},
		{
			name:       "right password with session",
			body:       func(s, _ string) any { return password("alice", "alice-password", s) },
			wantStatus: http.StatusOK,
		},
		{
			name:       "right password without session",
			body:       func(_, _ string) any { return password("alice", "alice-password", "") },
			wantStatus: http.StatusOK,
		},
		{
			name:       "right password, full user ID",
			body:       func(s, _ string) any { return password(alice.UserID, "alice-password", s) },
			wantStatus: http.StatusOK,
		},
		{
			name:          "wrong password",
			body:          func(s, _ string) any { return password("alice", "wrong", s) },
			wantStatus:    http.StatusUnauthorized,
			wantErrcode:   "M_FORBIDDEN",
			wantChallenge: true,
		},
		{
			name: "no password",
			body: func(s, _ string) any {
				return map[string]any{"auth": map[string]any{"type": "m.login.password", "session": s,
					"identifier": map[string]any{"type": "m.id.user", "user": "alice"}}}
			},
			wantStatus:    http.StatusUnauthorized,
			wantErrcode:   "M_BAD_JSON",
			wantChallenge: true,
		},
		// The answers below are not 401 although nobody proved a password:
		// a relay that reads "anything but 401" as authenticated lets them in.
		{
			name: "unknown auth type",
			body: func(s, _ string) any {
				return map[string]any{"auth": map[string]any{"type": "m.login.dummy", "session": s}}
			},
			wantStatus:  http.StatusBadRequest,
			wantErrcode: "M_BAD_JSON",
		},
		{
			name:        "empty auth",
			body:        func(_, _ string) any { return map[string]any{"auth": map[string]any{}} },
			wantStatus:  http.StatusBadRequest,
			wantErrcode: "M_BAD_JSON",
		},
		// Dendrite checks that a session belongs to the device ID before it
		// looks at the password: the relay must send the session back with
		// the device ID it was issued for.
		{
			name:        "right password, session issued for another device ID",
			body:        func(_, other string) any { return password("alice", "alice-password", other) },
			wantStatus:  http.StatusForbidden,
			wantErrcode: "M_FORBIDDEN",
		},
		{
			name:        "wrong password, session issued for another device ID",
			body:        func(_, other string) any { return password("alice", "wrong", other) },
			wantStatus:  http.StatusForbidden,
			wantErrcode: "M_FORBIDDEN",
		},
		{
			name:        "another user's right password",
			body:        func(s, _ string) any { return password("bob", "bob-password", s) },
			wantStatus:  http.StatusForbidden,
			wantErrcode: "M_FORBIDDEN",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deviceID := randomDeviceID(t)
			session := challenge(ctx, t, d, alice.AccessToken, deviceID)
			other := challenge(ctx, t, d, alice.AccessToken, randomDeviceID(t))
			body := tt.body(session, other)
			resp, err := peers.Do(ctx, http.MethodDelete, d.URL+"/_matrix/client/v3/devices/"+deviceID, alice.AccessToken, body)
			if err != nil {
				t.Fatal(err)
			}
			reqBody, _ := json.Marshal(body)
			t.Logf("DELETE /devices/%s body %s\n→ %d %s", deviceID, reqBody, resp.Status, resp.Body)
			if resp.Status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.Status, tt.wantStatus, resp.Body)
			}
			obj, err := resp.Object()
			if err != nil {
				t.Fatal(err)
			}
			if errcode, _ := obj["errcode"].(string); errcode != tt.wantErrcode {
				t.Errorf("errcode %q, want %q", errcode, tt.wantErrcode)
			}
			if tt.wantChallenge {
				assertChallenge(t, obj)
			} else if _, ok := obj["flows"]; ok {
				t.Errorf("answer carries flows, want none: %s", resp.Body)
			}
			if tt.wantStatus == http.StatusOK && len(obj) != 0 {
				t.Errorf("answer %s, want {}", resp.Body)
			}
		})
	}

	// A successful relay deletes no device, yet Dendrite announces a device
	// list change for the user (it uploads empty keys for the device ID).
	t.Run("device list change", func(t *testing.T) {
		since := quietSyncToken(ctx, t, d, alice.AccessToken)
		deviceID := randomDeviceID(t)
		resp, err := peers.Do(ctx, http.MethodDelete, d.URL+"/_matrix/client/v3/devices/"+deviceID, alice.AccessToken, password("alice", "alice-password", ""))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != http.StatusOK {
			t.Fatalf("relay call: status %d, want 200: %s", resp.Status, resp.Body)
		}
		next := syncSince(ctx, t, d, alice.AccessToken, since, syncWait)
		t.Logf("sync after the relay call: %+v", next)
		if !slices.Contains(next.DeviceLists.Changed, alice.UserID) {
			t.Errorf("device_lists.changed %v, want %s in it", next.DeviceLists.Changed, alice.UserID)
		}
	})

	t.Run("token and devices survive", func(t *testing.T) {
		var who map[string]any
		if err := DoJSON(ctx, d.URL, http.MethodGet, "/_matrix/client/v3/account/whoami", alice.AccessToken, nil, &who); err != nil {
			t.Fatal(err)
		}
		if who["user_id"] != alice.UserID || who["device_id"] != alice.DeviceID {
			t.Errorf("whoami %v, want user %s device %s", who, alice.UserID, alice.DeviceID)
		}
		if after := deviceIDs(ctx, t, d, alice.AccessToken); !slices.Equal(after, devicesBefore) {
			t.Errorf("devices after the relay calls %v, want %v", after, devicesBefore)
		}
	})
}

// TestDendriteAnswers records Dendrite's answers to the calls threepidd makes
// or takes over besides the UIA relay: whoami, and /account/3pid/add (which
// Dendrite does not implement).
func TestDendriteAnswers(t *testing.T) {
	ctx := ContextOf(t)
	d := StartDendrite(ctx, t, env)
	alice := mustRegister(ctx, t, d, "alice", "alice-password")
	add := map[string]any{"sid": "unknown-sid", "client_secret": "secret"}
	addWithAuth := map[string]any{"sid": "unknown-sid", "client_secret": "secret", "auth": map[string]any{
		"type": "m.login.password", "password": "alice-password",
		"identifier": map[string]any{"type": "m.id.user", "user": "alice"},
	}}
	tests := []struct {
		name, method, path, token string
		body                      any
		wantStatus                int
		wantErrcode               string
		want                      map[string]any // exact body when not nil
	}{
		{name: "whoami", method: http.MethodGet, path: "/_matrix/client/v3/account/whoami", token: alice.AccessToken,
			wantStatus: http.StatusOK, want: map[string]any{"user_id": alice.UserID, "device_id": alice.DeviceID, "is_guest": false}},
		{name: "whoami unknown token", method: http.MethodGet, path: "/_matrix/client/v3/account/whoami", token: "nope",
			wantStatus: http.StatusUnauthorized, wantErrcode: "M_UNKNOWN_TOKEN"},
		{name: "whoami no token", method: http.MethodGet, path: "/_matrix/client/v3/account/whoami",
			wantStatus: http.StatusUnauthorized, wantErrcode: "M_MISSING_TOKEN"},
		{name: "3pid/add without auth", method: http.MethodPost, path: "/_matrix/client/v3/account/3pid/add", token: alice.AccessToken,
			body: add, wantStatus: http.StatusNotFound, wantErrcode: "M_UNRECOGNIZED"},
		{name: "3pid/add with auth", method: http.MethodPost, path: "/_matrix/client/v3/account/3pid/add", token: alice.AccessToken,
			body: addWithAuth, wantStatus: http.StatusNotFound, wantErrcode: "M_UNRECOGNIZED"},
		{name: "3pid list", method: http.MethodGet, path: "/_matrix/client/v3/account/3pid", token: alice.AccessToken,
			wantStatus: http.StatusOK, want: map[string]any{"threepids": []any{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := peers.Do(ctx, tt.method, d.URL+tt.path, tt.token, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s %s → %d %s", tt.method, tt.path, resp.Status, resp.Body)
			if resp.Status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.Status, tt.wantStatus, resp.Body)
			}
			obj, err := resp.Object()
			if err != nil {
				t.Fatal(err)
			}
			if errcode, _ := obj["errcode"].(string); errcode != tt.wantErrcode {
				t.Errorf("errcode %q, want %q", errcode, tt.wantErrcode)
			}
			if tt.want != nil && !reflect.DeepEqual(obj, tt.want) {
				t.Errorf("body %s, want %v", resp.Body, tt.want)
			}
		})
	}
}

// syncWait is how long a long-polling /sync may wait for news in a test.
const syncWait = 5 * time.Second

// syncAnswer is the part of a /sync answer the tests read.
type syncAnswer struct {
	NextBatch   string `json:"next_batch"`
	DeviceLists struct {
		Changed []string `json:"changed"`
	} `json:"device_lists"`
}

// syncSince makes one /sync (initial when since is empty) that waits up to timeout.
func syncSince(ctx context.Context, t *testing.T, d *Dendrite, token, since string, timeout time.Duration) syncAnswer {
	t.Helper()
	q := url.Values{"timeout": {strconv.FormatInt(timeout.Milliseconds(), 10)}}
	if since != "" {
		q.Set("since", since)
	}
	var res syncAnswer
	if err := DoJSON(ctx, d.URL, http.MethodGet, "/_matrix/client/v3/sync?"+q.Encode(), token, nil, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// quietSyncToken returns a /sync token after which nothing is pending: it
// syncs until a short long-poll comes back without device list changes
// (registration and login announce theirs asynchronously).
func quietSyncToken(ctx context.Context, t *testing.T, d *Dendrite, token string) string {
	t.Helper()
	const maxRounds = 20
	since := syncSince(ctx, t, d, token, "", 0).NextBatch
	for range maxRounds {
		res := syncSince(ctx, t, d, token, since, 500*time.Millisecond)
		if len(res.DeviceLists.Changed) == 0 {
			return res.NextBatch
		}
		since = res.NextBatch
	}
	t.Fatalf("/sync still reports device list changes after %d rounds", maxRounds)
	return ""
}

// challenge starts a UIA session for deleting deviceID and returns its ID.
func challenge(ctx context.Context, t *testing.T, d *Dendrite, token, deviceID string) string {
	t.Helper()
	resp, err := peers.Do(ctx, http.MethodDelete, d.URL+"/_matrix/client/v3/devices/"+deviceID, token, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusUnauthorized {
		t.Fatalf("DELETE /devices/%s without auth: status %d, want 401: %s", deviceID, resp.Status, resp.Body)
	}
	obj, err := resp.Object()
	if err != nil {
		t.Fatal(err)
	}
	session, _ := obj["session"].(string)
	if session == "" {
		t.Fatalf("401 without a session: %s", resp.Body)
	}
	return session
}

// assertChallenge checks a UIA 401 body: password flow, a session, nothing completed.
func assertChallenge(t *testing.T, obj map[string]any) {
	t.Helper()
	if !reflect.DeepEqual(obj["flows"], passwordFlows) {
		t.Errorf("flows %v, want %v", obj["flows"], passwordFlows)
	}
	if s, _ := obj["session"].(string); s == "" {
		t.Errorf("no session in %v", obj)
	}
	if !reflect.DeepEqual(obj["completed"], []any{}) {
		t.Errorf("completed %v, want []", obj["completed"])
	}
	if !reflect.DeepEqual(obj["params"], map[string]any{}) {
		t.Errorf("params %v, want {}", obj["params"])
	}
}

// deviceIDs lists the IDs of the token owner's devices, sorted.
func deviceIDs(ctx context.Context, t *testing.T, d *Dendrite, token string) []string {
	t.Helper()
	var res struct {
		Devices []struct {
			DeviceID string `json:"device_id"`
		} `json:"devices"`
	}
	if err := DoJSON(ctx, d.URL, http.MethodGet, "/_matrix/client/v3/devices", token, nil, &res); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 0, len(res.Devices))
	for _, dev := range res.Devices {
		ids = append(ids, dev.DeviceID)
	}
	slices.Sort(ids)
	return ids
}

// randomDeviceID is a device ID no login ever issued, as the relay picks one.
func randomDeviceID(t *testing.T) string {
	t.Helper()
	id, err := randomHex(12)
	if err != nil {
		t.Fatal(err)
	}
	return "THREEPIDD_UIA_" + id
}
