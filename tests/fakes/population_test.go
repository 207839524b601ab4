package fakes

import (
	"net/http"
	"strings"
	"testing"
)

// TestHomeserverPopulation: computed users authenticate with their tokens,
// the admin API lists them a page at a time before the registered users and
// shows their 3PIDs, conflicts included.
func TestHomeserverPopulation(t *testing.T) {
	hs := NewHomeserver(t, hsTestServer)
	hs.SetAdminToken("admin_tok")
	p := Population{Users: 5, ConflictEvery: 2}
	hs.SetPopulation(p)
	hs.AddUser("a", "pw")
	admin := hs.URL() + "/_synapse/admin/v2/users"
	id := func(i int) string { return "@" + p.Localpart(i) + ":" + hsTestServer }

	for _, c := range []struct {
		name, token string
		status      int
		want        map[string]any
	}{
		{"population token", p.Token(3), 200, map[string]any{"user_id": id(3), "device_id": "LOAD3"}},
		{"past the population", p.Token(5), 401, map[string]any{"errcode": "M_UNKNOWN_TOKEN"}},
		{"not a number", "load_03", 401, map[string]any{"errcode": "M_UNKNOWN_TOKEN"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := hsCall(t, http.MethodGet, hs.URL()+"/_matrix/client/v3/account/whoami", c.token, nil, nil)
			hsCheck(t, status, body, c.status, c.want)
		})
	}

	for _, c := range []struct {
		query string
		names []string
		next  any
	}{
		{"?from=0&limit=2&guests=false", []string{id(0), id(1)}, "2"},
		{"?from=4&limit=2&guests=false", []string{id(4), "@a:" + hsTestServer}, hsAbsent{}},
	} {
		t.Run("list"+c.query, func(t *testing.T) {
			status, body := hsCall(t, http.MethodGet, admin+c.query, "admin_tok", nil, nil)
			hsCheck(t, status, body, 200, map[string]any{"total": 6, "next_token": c.next})
			users, _ := body["users"].([]any)
			var names []string
			for _, u := range users {
				names = append(names, u.(map[string]any)["name"].(string))
			}
			if strings.Join(names, " ") != strings.Join(c.names, " ") {
				t.Errorf("names = %v, want %v", names, c.names)
			}
		})
	}

	status, body := hsCall(t, http.MethodGet, admin+"/"+strings.ReplaceAll(id(3), ":", "%3A"), "admin_tok", nil, nil)
	hsCheck(t, status, body, 200, map[string]any{"name": id(3), "threepids": []HomeserverThreepid{
		{Medium: "email", Address: "user3.0@load.test", ValidatedAt: p.AddedAt(3), AddedAt: p.AddedAt(3)},
		{Medium: "email", Address: "USER2.0@LOAD.TEST", ValidatedAt: p.AddedAt(3), AddedAt: p.AddedAt(3)},
	}})
	status, body = hsCall(t, http.MethodGet, admin+"/%40load0000005%3A"+hsTestServer, "admin_tok", nil, nil)
	hsCheck(t, status, body, 404, map[string]any{"errcode": "M_NOT_FOUND"})
}
