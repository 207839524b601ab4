package adminapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/threepidd/threepidd/account"
	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/events/eventstest"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/router"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
)

const token = "admin-s3cret"

type fixture struct {
	t      *testing.T
	store  storage.Store
	events *eventstest.Recorder
	srv    *httptest.Server
}

// newFixture serves the admin API (token "" = off) on a fresh store holding
// two 3PIDs of @alice:hs.test (one bound) and one of @a/b:hs.test.
func newFixture(t *testing.T, s storage.Store, adminToken string) *fixture {
	t.Helper()
	ctx := context.Background()
	for _, a := range []storage.Association{
		{UserID: "@alice:hs.test", Medium: "email", Address: "alice@example.org", ValidatedAt: 10, AddedAt: 11},
		{UserID: "@alice:hs.test", Medium: "msisdn", Address: "447700900001", ValidatedAt: 20, AddedAt: 21},
		{UserID: "@a/b:hs.test", Medium: "email", Address: "a/b@example.org", ValidatedAt: 30, AddedAt: 31},
	} {
		if err := s.InsertAssociation(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.UpsertBinding(ctx, storage.Binding{UserID: "@alice:hs.test", Medium: "email", Address: "alice@example.org", IDServer: "id.test", BoundAt: 12}); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, store: s, events: &eventstest.Recorder{}}
	routes := router.NewRouter()
	(&Handler{Account: &account.Service{Store: s, Events: f.events}, Bindings: &bindings.Service{Store: s}, Token: adminToken, ServerName: "hs.test"}).Register(routes)
	f.srv = httptest.NewServer(router.Wrap(routes, nil))
	t.Cleanup(f.srv.Close)
	return f
}

// do sends a request with an Authorization header (none when auth is "")
// and returns the status and the decoded body.
func (f *fixture) do(method, path, auth string) (int, map[string]any) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if err := json.Unmarshal(data, &body); err != nil {
		f.t.Fatalf("%s %s: answer %d is not JSON: %s", method, path, resp.StatusCode, data)
	}
	return resp.StatusCode, body
}

func TestAuth(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		f := newFixture(t, s, token)
		routes := []struct{ method, path string }{
			{"GET", "/_threepidd/admin/v1/users/%40alice%3Ahs.test/threepids"},
			{"GET", "/_threepidd/admin/v1/threepids/email/alice%40example.org"},
			{"DELETE", "/_threepidd/admin/v1/users/%40alice%3Ahs.test/threepids/email/alice%40example.org"},
			{"POST", "/_threepidd/admin/v1/users/%40alice%3Ahs.test/deactivate"},
		}
		for _, rt := range routes {
			for _, tc := range []struct {
				auth    string
				status  int
				errcode string
			}{
				{"", 401, "M_MISSING_TOKEN"},
				{"Bearer wrong", 403, "M_FORBIDDEN"},
				{"Bearer " + token + "x", 403, "M_FORBIDDEN"},
				{"Basic " + token, 401, "M_MISSING_TOKEN"},
			} {
				if status, body := f.do(rt.method, rt.path, tc.auth); status != tc.status || body["errcode"] != tc.errcode {
					t.Errorf("%s %s with %q: %d %v, want %d %s", rt.method, rt.path, tc.auth, status, body, tc.status, tc.errcode)
				}
			}
		}
		if len(f.events.Changes()) != 0 {
			t.Fatalf("refused requests changed something: %v", f.events.Changes())
		}
		if as, _ := s.AssociationsOf(context.Background(), "@alice:hs.test"); len(as) != 2 {
			t.Fatalf("refused requests removed 3PIDs: %v", as)
		}
		// The admin token is never taken from the query string (access logs).
		if status, body := f.do("GET", "/_threepidd/admin/v1/users/%40alice%3Ahs.test/threepids?access_token="+token, ""); status != 401 || body["errcode"] != "M_MISSING_TOKEN" {
			t.Fatalf("access_token parameter: %d %v, want 401 M_MISSING_TOKEN", status, body)
		}
		if status, body := f.do("PUT", "/_threepidd/admin/v1/users/%40alice%3Ahs.test/threepids", "Bearer "+token); status != 405 || body["errcode"] != "M_UNRECOGNIZED" {
			t.Fatalf("wrong method: %d %v", status, body)
		}
		if status, body := f.do("GET", "/_threepidd/admin/v1/nothing", "Bearer "+token); status != 404 || body["errcode"] != "M_UNRECOGNIZED" {
			t.Fatalf("unknown path: %d %v", status, body)
		}

		off := newFixture(t, storagetest.Open(t, storagetest.Backends(t)[0]), "")
		for _, rt := range routes {
			if status, body := off.do(rt.method, rt.path, "Bearer "); status != 404 || body["errcode"] != "M_UNRECOGNIZED" {
				t.Errorf("API off: %s %s: %d %v", rt.method, rt.path, status, body)
			}
		}
	})
}

func TestUserThreepids(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		f := newFixture(t, s, token)
		status, body := f.do("GET", "/_threepidd/admin/v1/users/%40alice%3Ahs.test/threepids", "Bearer "+token)
		want := `{"bindings":[{"address":"alice@example.org","bound_at":12,"id_server":"id.test","medium":"email"}],` +
			`"threepids":[{"added_at":11,"address":"alice@example.org","medium":"email","validated_at":10},` +
			`{"added_at":21,"address":"447700900001","medium":"msisdn","validated_at":20}]}`
		if got, _ := json.Marshal(body); status != 200 || string(got) != want {
			t.Fatalf("%d %s, want %s", status, got, want)
		}
		// An encoded "/" stays in the user ID; unknown users have empty lists.
		status, body = f.do("GET", "/_threepidd/admin/v1/users/%40a%2Fb%3Ahs.test/threepids", "Bearer "+token)
		if list, _ := body["threepids"].([]any); status != 200 || len(list) != 1 {
			t.Fatalf("@a/b: %d %v", status, body)
		}
		status, body = f.do("GET", "/_threepidd/admin/v1/users/@nobody:hs.test/threepids", "Bearer "+token)
		if got, _ := json.Marshal(body); status != 200 || string(got) != `{"bindings":[],"threepids":[]}` {
			t.Fatalf("unknown user: %d %s", status, got)
		}
		for path, errcode := range map[string]string{
			"/_threepidd/admin/v1/users/alice/threepids":                 "M_INVALID_PARAM",
			"/_threepidd/admin/v1/users/%40alice%3Aother.test/threepids": "M_INVALID_PARAM",
		} {
			if status, body := f.do("GET", path, "Bearer "+token); status != 400 || body["errcode"] != errcode {
				t.Errorf("%s: %d %v, want 400 %s", path, status, body, errcode)
			}
		}
	})
}

func TestOwner(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		f := newFixture(t, s, token)
		tests := []struct {
			path          string
			status        int
			user, errcode string
		}{
			{"/threepids/email/alice%40example.org", 200, "@alice:hs.test", ""},
			{"/threepids/email/alice@EXAMPLE.org", 200, "@alice:hs.test", ""},
			{"/threepids/email/%20alice%40example.org%20", 200, "@alice:hs.test", ""},
			{"/threepids/msisdn/+447700900001", 200, "@alice:hs.test", ""},
			{"/threepids/msisdn/447700900001", 200, "@alice:hs.test", ""},
			{"/threepids/email/a%2Fb%40example.org", 200, "@a/b:hs.test", ""},
			{"/threepids/email/bob%40example.org", 404, "", "M_NOT_FOUND"},
			{"/threepids/email/not-an-address", 400, "", "M_INVALID_PARAM"},
			{"/threepids/fax/123", 400, "", "M_INVALID_PARAM"},
		}
		for _, tt := range tests {
			status, body := f.do("GET", "/_threepidd/admin/v1"+tt.path, "Bearer "+token)
			if status != tt.status || (tt.user != "" && body["user_id"] != tt.user) || (tt.errcode != "" && body["errcode"] != tt.errcode) {
				t.Errorf("%s: %d %v, want %d %s%s", tt.path, status, body, tt.status, tt.user, tt.errcode)
			}
		}
	})
}

func TestRemoveThreepid(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		f := newFixture(t, s, token)
		ctx := context.Background()
		// Someone else's 3PID, or one nobody holds: 404, nothing changes.
		for _, path := range []string{
			"/users/%40alice%3Ahs.test/threepids/email/a%2Fb%40example.org",
			"/users/%40bob%3Ahs.test/threepids/email/alice%40example.org",
			"/users/%40alice%3Ahs.test/threepids/email/zed%40example.org",
		} {
			if status, body := f.do("DELETE", "/_threepidd/admin/v1"+path, "Bearer "+token); status != 404 || body["errcode"] != "M_NOT_FOUND" {
				t.Errorf("%s: %d %v", path, status, body)
			}
		}
		if as, _ := s.AssociationsOf(ctx, "@a/b:hs.test"); len(as) != 1 {
			t.Fatalf("someone else's 3PID was removed")
		}
		status, body := f.do("DELETE", "/_threepidd/admin/v1/users/%40alice%3Ahs.test/threepids/msisdn/%2B447700900001", "Bearer "+token)
		if got, _ := json.Marshal(body); status != 200 || string(got) != `{}` {
			t.Fatalf("remove: %d %s", status, got)
		}
		as, _ := s.AssociationsOf(ctx, "@alice:hs.test")
		if len(as) != 1 || as[0].Medium != "email" {
			t.Fatalf("left %v", as)
		}
		want := policy.Change{Callback: policy.CallbackUserThreepid, Op: policy.OpRemove, UserID: "@alice:hs.test", Medium: "msisdn", Address: "447700900001"}
		if len(f.events.Changes()) != 1 || f.events.Changes()[0] != want {
			t.Fatalf("events %v, want %v", f.events.Changes(), want)
		}
		if status, _ := f.do("DELETE", "/_threepidd/admin/v1/users/%40alice%3Ahs.test/threepids/msisdn/447700900001", "Bearer "+token); status != 404 {
			t.Fatalf("second removal: %d", status)
		}
	})
}

func TestDeactivate(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		f := newFixture(t, s, token)
		ctx := context.Background()
		status, body := f.do("POST", "/_threepidd/admin/v1/users/%40alice%3Ahs.test/deactivate", "Bearer "+token)
		if status != 200 || body["id_server_unbind_result"] != "success" {
			t.Fatalf("deactivate: %d %v", status, body)
		}
		if as, _ := s.AssociationsOf(ctx, "@alice:hs.test"); len(as) != 0 {
			t.Fatalf("left %v", as)
		}
		if as, _ := s.AssociationsOf(ctx, "@a/b:hs.test"); len(as) != 1 {
			t.Fatalf("another user's 3PIDs were removed")
		}
		var ops []string
		for _, c := range f.events.Changes() {
			ops = append(ops, string(c.Op)+" "+c.UserID+" "+c.Address)
		}
		if got := strings.Join(ops, ", "); got != "remove @alice:hs.test alice@example.org, remove @alice:hs.test 447700900001" {
			t.Fatalf("events: %s", got)
		}
		// Again: nothing left, still success.
		if status, body := f.do("POST", "/_threepidd/admin/v1/users/%40alice%3Ahs.test/deactivate", "Bearer "+token); status != 200 || body["id_server_unbind_result"] != "success" || len(f.events.Changes()) != 2 {
			t.Fatalf("second deactivate: %d %v, %d events", status, body, len(f.events.Changes()))
		}
	})
}
