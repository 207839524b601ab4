package fakes

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const hsTestServer = "hs.test"

// hsCall sends a JSON request to the fake and decodes the JSON answer.
func hsCall(t *testing.T, method, u, token string, body any, header http.Header) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if header != nil {
		req.Header = header.Clone()
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: decode answer: %v", method, u, err)
	}
	return resp.StatusCode, out
}

// hsAbsent, as a want value of hsCheck, means the key must be absent.
type hsAbsent struct{}

// hsCheck asserts the status and that every want key has that JSON value.
func hsCheck(t *testing.T, status int, body map[string]any, wantStatus int, want map[string]any) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("status %d, want %d (body %v)", status, wantStatus, body)
	}
	for k, v := range want {
		got, ok := body[k]
		if v == (hsAbsent{}) {
			if ok {
				t.Errorf("%s = %v, want it absent", k, got)
			}
			continue
		}
		if gj, _ := json.Marshal(got); !ok || string(gj) != hsJSON(t, v) {
			t.Errorf("%s = %s, want %s", k, gj, hsJSON(t, v))
		}
	}
}

// hsJSON renders v as canonical JSON (object keys sorted).
func hsJSON(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var generic any
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatal(err)
	}
	raw, err = json.Marshal(generic)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// hsEventually polls cond until it holds or 5 s pass.
func hsEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func hsPasswordAuth(user, password, session string) map[string]any {
	auth := map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": user},
		"password":   password,
	}
	if session != "" {
		auth["session"] = session
	}
	return auth
}

func TestHomeserverWhoami(t *testing.T) {
	hs := NewHomeserver(t, hsTestServer)
	alice := hs.AddUser("alice", "pw")
	tok, dev := hs.Login(alice)
	soft, _ := hs.Login(alice)
	hs.SoftLogout(soft)
	guest, guestTok := hs.AddGuest()
	hs.AddAppservice("as_token", "bridge")
	base := hs.URL() + "/_matrix/client/v3/account/whoami"

	tests := []struct {
		name   string
		url    string
		token  string
		header http.Header
		status int
		want   map[string]any
	}{
		{"bearer", base, tok, nil, 200, map[string]any{"user_id": alice, "device_id": dev, "is_guest": false}},
		{"query token r0", hs.URL() + "/_matrix/client/r0/account/whoami?access_token=" + tok, "", nil, 200, map[string]any{"user_id": alice, "device_id": dev}},
		{"guest", base, guestTok, nil, 200, map[string]any{"user_id": guest, "device_id": "guest_device", "is_guest": true}},
		{"appservice sender", base, "as_token", nil, 200, map[string]any{"user_id": "@bridge:hs.test", "is_guest": false, "device_id": hsAbsent{}}},
		{"appservice masquerading", base + "?user_id=" + url.QueryEscape(alice), "as_token", nil, 200, map[string]any{"user_id": alice, "device_id": hsAbsent{}}},
		{"appservice unregistered user", base + "?user_id=%40ghost%3Ahs.test", "as_token", nil, 403, map[string]any{"errcode": "M_FORBIDDEN"}},
		{"appservice remote user", base + "?user_id=%40x%3Aother.test", "as_token", nil, 403, map[string]any{"errcode": "M_FORBIDDEN"}},
		{"missing", base, "", nil, 401, map[string]any{"errcode": "M_MISSING_TOKEN"}},
		{"mixed header and query", base + "?access_token=" + tok, tok, nil, 401, map[string]any{"errcode": "M_MISSING_TOKEN"}},
		{"not bearer", base, "", http.Header{"Authorization": {"Basic abc"}}, 401, map[string]any{"errcode": "M_MISSING_TOKEN"}},
		{"unknown", base, "nope", nil, 401, map[string]any{"errcode": "M_UNKNOWN_TOKEN", "soft_logout": false}},
		{"soft logout", base, soft, nil, 401, map[string]any{"errcode": "M_UNKNOWN_TOKEN", "soft_logout": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := hsCall(t, http.MethodGet, tt.url, tt.token, nil, tt.header)
			hsCheck(t, status, body, tt.status, tt.want)
		})
	}
	if got := hs.WhoamiCalls(); got != len(tests) {
		t.Errorf("WhoamiCalls = %d, want %d", got, len(tests))
	}

	hsCall(t, http.MethodGet, base, tok, nil, http.Header{"X-Forwarded-For": {"203.0.113.7"}, "User-Agent": {"probe/1"}})
	h := hs.LastHeaders("/_matrix/client/v3/account/whoami")
	if h.Get("X-Forwarded-For") != "203.0.113.7" || h.Get("User-Agent") != "probe/1" {
		t.Errorf("LastHeaders = %v", h)
	}
	hs.RevokeToken(tok)
	if hs.TokenValid(tok) || hs.TokenValid(soft) || !hs.TokenValid("as_token") {
		t.Error("TokenValid: revoked or soft-logged-out token valid, or appservice token invalid")
	}
}

func TestHomeserverSynapseUIA(t *testing.T) {
	hs := NewHomeserver(t, hsTestServer)
	alice := hs.AddUser("alice", "pw")
	hs.AddUser("bob", "bobpw")
	tok, _ := hs.Login(alice)
	_, guestTok := hs.AddGuest()
	add := hs.URL() + "/_matrix/client/v3/account/3pid/add"
	deactivate := hs.URL() + "/_matrix/client/v3/account/deactivate"
	flows := []any{map[string]any{"stages": []any{"m.login.password"}}}

	// The session of the first 401 is threaded through the later steps.
	var session string
	body := func(auth map[string]any) map[string]any {
		b := map[string]any{"client_secret": "cs", "sid": "unknown-sid"}
		if auth != nil {
			b["auth"] = auth
		}
		return b
	}
	steps := []struct {
		name   string
		url    string
		token  string
		body   func() any
		status int
		want   map[string]any
	}{
		{"no auth: challenge", add, tok, func() any { return body(nil) }, 401,
			map[string]any{"flows": flows, "params": map[string]any{}, "errcode": hsAbsent{}, "completed": hsAbsent{}}},
		{"wrong password", add, tok, func() any { return body(hsPasswordAuth("alice", "bad", session)) }, 401,
			map[string]any{"flows": flows, "errcode": "M_FORBIDDEN", "error": "Invalid username or password", "completed": []any{}}},
		{"right password: UIA passes, sid unknown", add, tok, func() any { return body(hsPasswordAuth("alice", "pw", session)) }, 400,
			map[string]any{"errcode": "M_THREEPID_AUTH_FAILED"}},
		{"completed session replayed", add, tok, func() any { return body(map[string]any{"session": session}) }, 400,
			map[string]any{"errcode": "M_THREEPID_AUTH_FAILED"}},
		{"completed session replayed with a wrong password", add, tok, func() any { return body(hsPasswordAuth("alice", "bad", session)) }, 400,
			map[string]any{"errcode": "M_THREEPID_AUTH_FAILED"}},
		{"session used on another endpoint", deactivate, tok, func() any { return map[string]any{"auth": map[string]any{"session": session}} }, 403,
			map[string]any{"errcode": "M_UNKNOWN"}},
		{"unknown session", add, tok, func() any { return body(hsPasswordAuth("alice", "pw", "nope")) }, 400,
			map[string]any{"errcode": "M_UNKNOWN", "error": "Unknown session ID: nope"}},
		{"another user's password", add, tok, func() any { return body(hsPasswordAuth("@bob:hs.test", "bobpw", "")) }, 403,
			map[string]any{"errcode": "M_FORBIDDEN", "error": "Invalid auth"}},
		{"missing sid", add, tok, func() any { return map[string]any{"client_secret": "cs"} }, 400,
			map[string]any{"errcode": "M_MISSING_PARAM"}},
		{"guest", add, guestTok, func() any { return body(nil) }, 403,
			map[string]any{"errcode": "M_GUEST_ACCESS_FORBIDDEN"}},
		{"no token", add, "", func() any { return body(nil) }, 401,
			map[string]any{"errcode": "M_MISSING_TOKEN"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			status, got := hsCall(t, http.MethodPost, st.url, st.token, st.body(), nil)
			hsCheck(t, status, got, st.status, st.want)
			if session == "" {
				session, _ = got["session"].(string)
			}
			if s, ok := got["session"]; ok && s != session && st.status == 401 {
				t.Errorf("session = %v, want %s", s, session)
			}
		})
	}
	if session == "" {
		t.Fatal("no session issued")
	}
	if calls := hs.RelayCalls(); len(calls) != len(steps) || calls[0].Method != http.MethodPost || calls[0].Path != "/_matrix/client/v3/account/3pid/add" {
		t.Errorf("RelayCalls = %+v", calls)
	}
}

func TestHomeserverDeactivate(t *testing.T) {
	hs := NewHomeserver(t, hsTestServer)
	alice := hs.AddUser("alice", "pw")
	bob := hs.AddUser("bob", "pw")
	hs.AddAppservice("as_token", "bridge")
	tok, _ := hs.Login(alice)
	hs.SetThreepids(alice, []HomeserverThreepid{{Medium: "email", Address: "a@example.org"}})
	u := hs.URL() + "/_matrix/client/v3/account/deactivate"

	status, got := hsCall(t, http.MethodPost, u, tok, map[string]any{}, nil)
	hsCheck(t, status, got, 401, map[string]any{"errcode": hsAbsent{}})
	session, _ := got["session"].(string)
	status, got = hsCall(t, http.MethodPost, u, tok, map[string]any{"auth": hsPasswordAuth("alice", "pw", session)}, nil)
	hsCheck(t, status, got, 200, map[string]any{"id_server_unbind_result": "success"})
	if !hs.Deactivated(alice) || hs.TokenValid(tok) || len(hs.Devices(alice)) != 0 || len(hs.Threepids(alice)) != 0 {
		t.Errorf("after deactivation: deactivated=%v tokenValid=%v devices=%v threepids=%v",
			hs.Deactivated(alice), hs.TokenValid(tok), hs.Devices(alice), hs.Threepids(alice))
	}

	// Appservices deactivate their users without UIA.
	hs.SetDeactivateUnbindResult("no-support")
	status, got = hsCall(t, http.MethodPost, u+"?user_id="+url.QueryEscape(bob), "as_token", map[string]any{}, nil)
	hsCheck(t, status, got, 200, map[string]any{"id_server_unbind_result": "no-support"})
	if !hs.Deactivated(bob) {
		t.Error("bob not deactivated")
	}
}

func TestHomeserverDendriteDeleteDevice(t *testing.T) {
	hs := NewHomeserver(t, hsTestServer)
	alice := hs.AddUser("alice", "pw")
	hs.AddUser("bob", "bobpw")
	tokA, devA := hs.Login(alice)
	tokB, devB := hs.Login(alice)
	devices := hs.URL() + "/_matrix/client/v3/devices/"

	var session string
	steps := []struct {
		name   string
		device string
		body   func() any
		status int
		want   map[string]any
	}{
		{"no auth: challenge", "RELAYDEV", func() any { return map[string]any{} }, 401,
			map[string]any{"completed": []any{}, "params": map[string]any{}, "errcode": hsAbsent{}}},
		{"session started for another device", "OTHERDEV", func() any { return map[string]any{"auth": hsPasswordAuth("alice", "pw", session)} }, 403,
			map[string]any{"errcode": "M_FORBIDDEN", "error": "session and device mismatch"}},
		{"wrong password", "RELAYDEV", func() any { return map[string]any{"auth": hsPasswordAuth("alice", "bad", session)} }, 401,
			map[string]any{"errcode": "M_FORBIDDEN", "completed": []any{}}},
		{"unknown auth type", "RELAYDEV", func() any { return map[string]any{"auth": map[string]any{"type": "m.login.dummy"}} }, 400,
			map[string]any{"errcode": "M_BAD_JSON"}},
		{"another user's password", "RELAYDEV", func() any { return map[string]any{"auth": hsPasswordAuth("bob", "bobpw", "")} }, 403,
			map[string]any{"errcode": "M_FORBIDDEN", "error": "Cannot delete another user's device"}},
		{"unknown device: 200, nothing deleted", "RELAYDEV", func() any { return map[string]any{"auth": hsPasswordAuth("alice", "pw", session)} }, 200,
			map[string]any{"errcode": hsAbsent{}}},
		{"wrong password on an unknown session", "RELAYDEV", func() any { return map[string]any{"auth": hsPasswordAuth("alice", "bad", "stale")} }, 401,
			map[string]any{"errcode": "M_FORBIDDEN", "completed": nil, "session": "stale"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			status, got := hsCall(t, http.MethodDelete, devices+st.device, tokA, st.body(), nil)
			hsCheck(t, status, got, st.status, st.want)
			if session == "" {
				session, _ = got["session"].(string)
			}
		})
	}
	if got, want := hs.Devices(alice), slices.Sorted(slices.Values([]string{devA, devB})); !reflect.DeepEqual(got, want) {
		t.Fatalf("devices after relay = %v, want %v", got, want)
	}

	status, got := hsCall(t, http.MethodDelete, devices+devB, tokA, map[string]any{"auth": hsPasswordAuth("@alice:hs.test", "pw", "")}, nil)
	hsCheck(t, status, got, 200, nil)
	if got := hs.Devices(alice); !reflect.DeepEqual(got, []string{devA}) || hs.TokenValid(tokB) {
		t.Errorf("after deleting %s: devices = %v, token valid = %v", devB, got, hs.TokenValid(tokB))
	}
	if calls := hs.RelayCalls(); len(calls) != len(steps)+1 || calls[0].Method != http.MethodDelete || calls[0].Path != "/_matrix/client/v3/devices/RELAYDEV" {
		t.Errorf("RelayCalls = %+v", calls)
	}
}

func TestHomeserverDeleteDevicesEmptyListDeletesAll(t *testing.T) {
	hs := NewHomeserver(t, hsTestServer)
	alice := hs.AddUser("alice", "pw")
	tok, _ := hs.Login(alice)
	hs.Login(alice)
	status, got := hsCall(t, http.MethodPost, hs.URL()+"/_matrix/client/v3/delete_devices", tok,
		map[string]any{"devices": []string{}, "auth": hsPasswordAuth("alice", "pw", "")}, nil)
	hsCheck(t, status, got, 200, nil)
	if d := hs.Devices(alice); len(d) != 0 || hs.TokenValid(tok) || hs.DeleteDevicesCalls() != 1 {
		t.Errorf("devices = %v, caller's token valid = %v, calls = %d", d, hs.TokenValid(tok), hs.DeleteDevicesCalls())
	}
}

// hsSync runs GET /sync and returns the response and its body; headers are sent as
// given (an explicit Accept-Encoding disables transparent decompression).
func hsSync(ctx context.Context, u, token string, header http.Header) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

type hsSyncBody struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []json.RawMessage `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

func hsDecodeSync(t *testing.T, body []byte) hsSyncBody {
	t.Helper()
	var s hsSyncBody
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("decode sync body %q: %v", body, err)
	}
	return s
}

func TestHomeserverSync(t *testing.T) {
	hs := NewHomeserver(t, hsTestServer)
	alice := hs.AddUser("alice", "pw")
	bob := hs.AddUser("bob", "pw")
	tok, _ := hs.Login(alice)
	syncURL := hs.URL() + "/_matrix/client/v3/sync"
	ctx := context.Background()

	_, body, err := hsSync(ctx, syncURL+"?timeout=30000", tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := hsDecodeSync(t, body).NextBatch
	if !strings.ContainsAny(first, "_~.") {
		t.Fatalf("next_batch %q lacks the odd characters", first)
	}

	t.Run("long-poll wakes on PushEvent", func(t *testing.T) {
		type result struct {
			body []byte
			err  error
		}
		done := make(chan result, 1)
		go func() {
			_, body, err := hsSync(ctx, syncURL+"?timeout=20000&since="+url.QueryEscape(first), tok, nil)
			done <- result{body, err}
		}()
		hsEventually(t, "the long-poll to arrive", func() bool { return len(hs.SyncRequests()) == 2 })
		hs.PushEvent(bob, json.RawMessage(`{"type":"m.other"}`)) // someone else's: keeps waiting
		hs.PushEvent(alice, json.RawMessage(`{"type":"m.room.message","content":{"body":"hi"}}`))
		var res result
		select {
		case res = <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("long-poll did not return after PushEvent")
		}
		if res.err != nil {
			t.Fatal(res.err)
		}
		s := hsDecodeSync(t, res.body)
		events := s.Rooms.Join["!fake:hs.test"].Timeline.Events
		if len(events) != 1 || !strings.Contains(string(events[0]), `"hi"`) || s.NextBatch == first {
			t.Errorf("sync answer %s", res.body)
		}
		if got := hs.SyncRequests()[1].Get("since"); got != first {
			t.Errorf("since received = %q, want %q", got, first)
		}
	})

	t.Run("client going away is counted", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		n := len(hs.SyncRequests())
		_, body, _ := hsSync(ctx, syncURL, tok, nil)
		current := hsDecodeSync(t, body).NextBatch
		go func() { _, _, _ = hsSync(cctx, syncURL+"?timeout=20000&since="+current, tok, nil) }()
		hsEventually(t, "the long-poll to arrive", func() bool { return len(hs.SyncRequests()) == n+2 })
		cancel()
		hsEventually(t, "the cancellation", func() bool { return hs.SyncCancellations() == 1 })
	})

	t.Run("timeout answers empty", func(t *testing.T) {
		_, body, _ := hsSync(ctx, syncURL, tok, nil)
		current := hsDecodeSync(t, body).NextBatch
		_, body, err := hsSync(ctx, syncURL+"?timeout=20&since="+current, tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		if s := hsDecodeSync(t, body); s.NextBatch != current || len(s.Rooms.Join) != 0 {
			t.Errorf("empty answer %s", body)
		}
	})

	t.Run("invalid since", func(t *testing.T) {
		resp, body, err := hsSync(ctx, syncURL+"?since=s1_34", tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 400 || !strings.Contains(string(body), "Invalid stream token") {
			t.Errorf("status %d body %s", resp.StatusCode, body)
		}
	})

	t.Run("padding and gzip", func(t *testing.T) {
		hs.SetSyncPadding(4096)
		hs.SetSyncGzip(true)
		resp, body, err := hsSync(ctx, syncURL, tok, http.Header{"Accept-Encoding": {"gzip"}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("Content-Encoding = %q", resp.Header.Get("Content-Encoding"))
		}
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		plain, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if len(plain) != 4096 || hsDecodeSync(t, plain).NextBatch == "" {
			t.Errorf("padded body: %d bytes, want 4096", len(plain))
		}
	})
}

func TestHomeserverTokenEndpoints(t *testing.T) {
	hs := NewHomeserver(t, hsTestServer)
	alice := hs.AddUser("alice", "pw")
	tok, _ := hs.Login(alice)
	hs.PushEvent(alice, json.RawMessage(`{}`))
	good := hsSyncToken(1)
	base := hs.URL() + "/_matrix/client/v3"
	tests := []struct {
		name   string
		path   string
		status int
		want   map[string]any
	}{
		{"keys/changes", "/keys/changes?from=" + good + "&to=" + good, 200, map[string]any{"changed": []any{}, "left": []any{}}},
		{"keys/changes without from", "/keys/changes?to=" + good, 400, map[string]any{"errcode": "M_MISSING_PARAM"}},
		{"keys/changes with a composite token", "/keys/changes?from=" + good + ".tp5", 400, map[string]any{"errcode": "M_UNKNOWN"}},
		{"messages from a sync token", "/rooms/%21r%3Ahs.test/messages?from=" + good, 200, map[string]any{"chunk": []any{}, "start": good, "end": hsTopoToken(1)}},
		{"messages from a pagination token", "/rooms/%21r%3Ahs.test/messages?from=" + hsTopoToken(1), 200, map[string]any{"start": hsTopoToken(1)}},
		{"messages from a future token", "/rooms/%21r%3Ahs.test/messages?from=" + hsSyncToken(9), 400, map[string]any{"errcode": "M_UNKNOWN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := hsCall(t, http.MethodGet, base+tt.path, tok, nil, nil)
			hsCheck(t, status, body, tt.status, tt.want)
		})
	}
	if kc, m := hs.KeyChangesRequests(), hs.MessagesRequests(); len(kc) != 3 || kc[0].Get("to") != good || len(m) != 3 || m[0].Get("from") != good {
		t.Errorf("recorded keys/changes %v, messages %v", kc, m)
	}
}

func TestHomeserverAdminUsers(t *testing.T) {
	hs := NewHomeserver(t, hsTestServer)
	hs.SetAdminToken("admin_tok")
	for _, lp := range []string{"e", "b", "a", "d", "c"} {
		hs.AddUser(lp, "pw")
	}
	hs.AddGuest()
	gone := hs.AddUser("z", "pw")
	userTok, _ := hs.Login("@a:hs.test")
	admin := hs.URL() + "/_synapse/admin/v2/users"
	zTok, _ := hs.Login(gone)
	status, got := hsCall(t, http.MethodPost, hs.URL()+"/_matrix/client/v3/account/deactivate", zTok,
		map[string]any{"auth": hsPasswordAuth("z", "pw", "")}, nil)
	hsCheck(t, status, got, 200, nil)

	names := func(body map[string]any) []string {
		var out []string
		users, _ := body["users"].([]any)
		for _, u := range users {
			out = append(out, u.(map[string]any)["name"].(string))
		}
		return out
	}
	pages := []struct {
		query string
		names []string
		want  map[string]any
	}{
		{"?from=0&limit=2&guests=false", []string{"@a:hs.test", "@b:hs.test"}, map[string]any{"next_token": "2", "total": 5}},
		{"?from=2&limit=2&guests=false", []string{"@c:hs.test", "@d:hs.test"}, map[string]any{"next_token": "4", "total": 5}},
		{"?from=4&limit=2&guests=false", []string{"@e:hs.test"}, map[string]any{"next_token": hsAbsent{}, "total": 5}},
		{"?limit=100", nil, map[string]any{"next_token": hsAbsent{}, "total": 6}},
		{"?deactivated=true&guests=false", nil, map[string]any{"total": 6}},
	}
	for _, p := range pages {
		t.Run("list"+p.query, func(t *testing.T) {
			status, body := hsCall(t, http.MethodGet, admin+p.query, "admin_tok", nil, nil)
			hsCheck(t, status, body, 200, p.want)
			if p.names != nil && !reflect.DeepEqual(names(body), p.names) {
				t.Errorf("names = %v, want %v", names(body), p.names)
			}
		})
	}

	auth := []struct {
		name, token, errcode string
		status               int
	}{
		{"missing token", "", "M_MISSING_TOKEN", 401},
		{"unknown token", "nope", "M_UNKNOWN_TOKEN", 401},
		{"non-admin user", userTok, "M_FORBIDDEN", 403},
	}
	for _, a := range auth {
		t.Run(a.name, func(t *testing.T) {
			status, body := hsCall(t, http.MethodGet, admin, a.token, nil, nil)
			hsCheck(t, status, body, a.status, map[string]any{"errcode": a.errcode})
		})
	}

	t.Run("get and put threepids", func(t *testing.T) {
		hs.SetThreepids("@a:hs.test", []HomeserverThreepid{
			{Medium: "email", Address: "keep@example.org", AddedAt: 1000, ValidatedAt: 900},
			{Medium: "email", Address: "drop@example.org", AddedAt: 1000, ValidatedAt: 900},
		})
		hs.SetThreepids("@b:hs.test", []HomeserverThreepid{{Medium: "msisdn", Address: "447700900000"}})
		status, body := hsCall(t, http.MethodGet, admin+"/%40a%3Ahs.test", "admin_tok", nil, nil)
		hsCheck(t, status, body, 200, map[string]any{"name": "@a:hs.test", "deactivated": false, "threepids": hs.Threepids("@a:hs.test")})

		before := time.Now().UnixMilli()
		status, body = hsCall(t, http.MethodPut, admin+"/%40a%3Ahs.test", "admin_tok", map[string]any{"threepids": []any{
			map[string]any{"medium": "email", "address": "keep@example.org"},
			map[string]any{"medium": "email", "address": "New@Example.ORG"},
			map[string]any{"medium": "msisdn", "address": "447700900000"},
		}}, nil)
		tps := hs.Threepids("@a:hs.test")
		hsCheck(t, status, body, 200, map[string]any{"threepids": tps})
		if len(tps) != 3 || tps[0] != (HomeserverThreepid{"email", "keep@example.org", 900, 1000}) ||
			tps[1].Address != "new@example.org" || tps[1].AddedAt < before || tps[1].ValidatedAt != tps[1].AddedAt {
			t.Errorf("threepids after PUT = %+v", tps)
		}
		if got := hs.Threepids("@b:hs.test"); len(got) != 0 {
			t.Errorf("b still holds %v after the address moved to a", got)
		}
	})

	t.Run("put creates an unknown user", func(t *testing.T) {
		status, body := hsCall(t, http.MethodPut, admin+"/%40new%3Ahs.test", "admin_tok", map[string]any{"threepids": []any{}}, nil)
		hsCheck(t, status, body, 201, map[string]any{"name": "@new:hs.test", "threepids": []any{}})
	})

	t.Run("lookup errors", func(t *testing.T) {
		status, body := hsCall(t, http.MethodGet, admin+"/%40nobody%3Ahs.test", "admin_tok", nil, nil)
		hsCheck(t, status, body, 404, map[string]any{"errcode": "M_NOT_FOUND"})
		status, body = hsCall(t, http.MethodGet, admin+"/%40x%3Aother.test", "admin_tok", nil, nil)
		hsCheck(t, status, body, 400, map[string]any{"errcode": "M_UNKNOWN"})
		status, body = hsCall(t, http.MethodPut, admin+"/%40a%3Ahs.test", "admin_tok", map[string]any{"threepids": []any{map[string]any{"medium": "email"}}}, nil)
		hsCheck(t, status, body, 400, map[string]any{"errcode": "M_MISSING_PARAM"})
	})

	t.Run("down", func(t *testing.T) {
		hs.SetDown(true)
		defer hs.SetDown(false)
		n := hs.AdminCalls()
		status, body := hsCall(t, http.MethodGet, admin, "admin_tok", nil, nil)
		hsCheck(t, status, body, 503, map[string]any{"errcode": "M_UNKNOWN"})
		if hs.AdminCalls() != n+1 {
			t.Errorf("AdminCalls = %d, want %d", hs.AdminCalls(), n+1)
		}
	})
}

func TestHomeserverUnknownRoutes(t *testing.T) {
	hs := NewHomeserver(t, hsTestServer)
	tests := []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/_matrix/client/v3/nothing", 404},
		{http.MethodGet, "/_matrix/client/v1/account/whoami", 404},
		{http.MethodPost, "/_matrix/client/v3/account/whoami", 405},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			status, body := hsCall(t, tt.method, hs.URL()+tt.path, "", nil, nil)
			hsCheck(t, status, body, tt.status, map[string]any{"errcode": "M_UNRECOGNIZED"})
		})
	}
}

// TestHomeserverSynapseThreepidTable: what Synapse's own 3PID table feeds,
// with the answers of Synapse's admin API: an address given at registration
// with its pusher, the 3PID lookup (404 for nobody), a deactivation through
// the admin API (3PIDs and pushers gone), pushers only for held addresses,
// and the capability.
func TestHomeserverSynapseThreepidTable(t *testing.T) {
	hs := NewHomeserver(t, hsTestServer)
	hs.SetAdminToken("admin_tok")
	alice := hs.RegisterWithEmail("alice", "pw", " Alice@Example.ORG")
	lookup := hs.URL() + "/_synapse/admin/v1/threepid/email/users/"
	status, body := hsCall(t, http.MethodGet, lookup+"alice%40example.org", "admin_tok", nil, nil)
	hsCheck(t, status, body, 200, map[string]any{"user_id": alice})
	status, body = hsCall(t, http.MethodGet, lookup+"Alice%40Example.ORG", "admin_tok", nil, nil)
	hsCheck(t, status, body, 404, map[string]any{"errcode": "M_NOT_FOUND"})
	status, body = hsCall(t, http.MethodGet, lookup+"alice%40example.org", "", nil, nil)
	hsCheck(t, status, body, 401, map[string]any{"errcode": "M_MISSING_TOKEN"})
	status, body = hsCall(t, http.MethodGet, hs.URL()+"/_synapse/admin/v1/users/"+url.PathEscape(alice)+"/pushers", "admin_tok", nil, nil)
	hsCheck(t, status, body, 200, map[string]any{"total": 1,
		"pushers": []any{map[string]any{"kind": "email", "app_id": "m.email", "pushkey": "alice@example.org"}}})

	if err := hs.AddEmailPusher(alice, "other@example.org"); err == nil {
		t.Error("a pusher for an address alice does not hold")
	}
	tok, _ := hs.Login(alice)
	for _, prefix := range []string{"r0", "v3", "unstable"} {
		status, body = hsCall(t, http.MethodGet, hs.URL()+"/_matrix/client/"+prefix+"/capabilities", tok, nil, nil)
		hsCheck(t, status, body, 200, map[string]any{"capabilities": map[string]any{
			"m.room_versions":   map[string]any{"default": "10", "available": map[string]any{"10": "stable", "11": "stable"}},
			"m.change_password": map[string]any{"enabled": true}, "m.set_displayname": map[string]any{"enabled": true},
			"m.set_avatar_url": map[string]any{"enabled": true}, "m.3pid_changes": map[string]any{"enabled": true},
			"m.get_login_token": map[string]any{"enabled": false}, "m.profile_fields": map[string]any{"enabled": true},
			"org.matrix.msc4140.delayed_events": map[string]any{"max_delay_ms": 86400000, "max_scheduled": 100},
		}})
	}

	deactivate := hs.URL() + "/_synapse/admin/v1/deactivate/" + url.PathEscape(alice)
	status, body = hsCall(t, http.MethodPost, deactivate, "admin_tok", map[string]any{"erase": "yes"}, nil)
	hsCheck(t, status, body, 400, map[string]any{"errcode": "M_BAD_JSON"})
	status, body = hsCall(t, http.MethodPost, deactivate, "admin_tok", map[string]any{"erase": false}, nil)
	hsCheck(t, status, body, 200, map[string]any{"id_server_unbind_result": "success"})
	if !hs.Deactivated(alice) || len(hs.Threepids(alice)) != 0 || len(hs.Pushers(alice)) != 0 || hs.TokenValid(tok) {
		t.Errorf("after the admin deactivation: deactivated %t, 3PIDs %v, pushers %v, token valid %t",
			hs.Deactivated(alice), hs.Threepids(alice), hs.Pushers(alice), hs.TokenValid(tok))
	}
	status, body = hsCall(t, http.MethodGet, lookup+"alice%40example.org", "admin_tok", nil, nil)
	hsCheck(t, status, body, 404, map[string]any{"errcode": "M_NOT_FOUND"})
}
