package load

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/threepid"
)

// TestBaseline checks that the baseline makes the store changes threepidd
// makes for the same requests, on each backend.
func TestBaseline(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		ctx := t.Context()
		b, err := StartBaseline(store)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		cl := NewClient(1)
		defer cl.CloseIdle()
		call := func(path, user string, body any, want int) []byte {
			t.Helper()
			c := Call{Method: http.MethodPost, URL: b.URL() + path, Header: UserHeader, HeaderValue: user, Want: want}
			if body == nil {
				c.Method = http.MethodGet
			} else {
				c.Body = jsonBody(body)
			}
			answer, err := cl.Do(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			return answer
		}
		const alice, bob, address, is = "@alice:hs.test", "@bob:hs.test", "a@load.test", "id.test"

		// requestToken → submit → add.
		var tok BaselineToken
		if err := json.Unmarshal(call(BaselineRequestToken, "", map[string]any{"client_secret": "s", "email": address, "send_attempt": 1}, 200), &tok); err != nil || tok.Token == "" {
			t.Fatalf("requestToken: %+v, %v", tok, err)
		}
		call(BaselineAdd, alice, map[string]any{"sid": tok.SID, "client_secret": "s"}, http.StatusBadRequest) // not validated
		call(BaselineSubmitToken, "", map[string]any{"sid": tok.SID, "client_secret": "s", "token": "wrong"}, http.StatusBadRequest)
		call(BaselineSubmitToken, "", map[string]any{"sid": tok.SID, "client_secret": "s", "token": tok.Token}, 200)
		call(BaselineAdd, alice, map[string]any{"sid": tok.SID, "client_secret": "s"}, 200)
		call(BaselineAdd, alice, map[string]any{"sid": tok.SID, "client_secret": "s"}, http.StatusBadRequest) // spent
		if a, err := store.AssociationByAddress(ctx, threepid.MediumEmail, address); err != nil || a.UserID != alice {
			t.Fatalf("association after add: %+v, %v", a, err)
		}
		call(BaselineRequestToken, "", map[string]any{"client_secret": "s2", "email": address, "send_attempt": 1}, http.StatusBadRequest) // in use
		var list struct {
			Threepids []baselineThreepid `json:"threepids"`
		}
		if err := json.Unmarshal(call(BaselineList, alice, nil, 200), &list); err != nil || len(list.Threepids) != 1 || list.Threepids[0].Address != address {
			t.Fatalf("list: %+v, %v", list, err)
		}

		// bind by alice, taken over by bob's bind, unbound by bob.
		binding := map[string]any{"medium": threepid.MediumEmail, "address": address, "id_server": is}
		call(BaselineBind, alice, binding, 200)
		call(BaselineBind, bob, binding, 200)
		bound := func() []string {
			t.Helper()
			bs, err := store.BindingsOf3PID(ctx, threepid.MediumEmail, address, is)
			if err != nil {
				t.Fatal(err)
			}
			var users []string
			for _, b := range bs {
				users = append(users, b.UserID)
			}
			return users
		}
		if got := bound(); len(got) != 1 || got[0] != bob {
			t.Fatalf("bound after takeover: %v, want bob only", got)
		}
		notes, err := store.NotificationsSince(ctx, alice, 0, 0, 10)
		if err != nil || len(notes) != 1 || notes[0].MXID != bob || notes[0].Deleted {
			t.Fatalf("alice's notifications: %+v, %v; want one takeover by bob", notes, err)
		}
		if got := call(BaselineUnbind, bob, binding, 200); !jsonHas(got, "id_server_unbind_result", "success") {
			t.Errorf("unbind answered %s", got)
		}
		if got := bound(); len(got) != 0 {
			t.Fatalf("bound after unbind: %v, want none", got)
		}

		// onupdate: a takeover drops alice's binding once; a replay changes nothing.
		call(BaselineBind, alice, binding, 200)
		update := BaselineOnUpdateBody{Origin: is, Threepid: address, Medium: threepid.MediumEmail, MXID: "@carol:remote.test"}
		call(BaselineOnUpdate, "", update, 200)
		if got := bound(); len(got) != 0 {
			t.Fatalf("bound after onupdate: %v, want none", got)
		}
		before, err := store.MaxStreamID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		call(BaselineBind, alice, binding, 200)
		call(BaselineOnUpdate, "", update, 200)
		if got := bound(); len(got) != 1 {
			t.Errorf("bound after a replayed onupdate: %v, want alice still", got)
		}
		if after, err := store.MaxStreamID(ctx); err != nil || after != before {
			t.Errorf("stream at %d after a replay (%v), want %d", after, err, before)
		}

		// delete: the address goes once; deleting it again is refused.
		gone := map[string]any{"medium": threepid.MediumEmail, "address": address}
		call(BaselineDelete, bob, gone, http.StatusBadRequest) // not bob's
		call(BaselineDelete, alice, gone, 200)
		call(BaselineDelete, alice, gone, http.StatusBadRequest)
		if _, err := store.AssociationByAddress(ctx, threepid.MediumEmail, address); err == nil {
			t.Errorf("%s still held after delete", address)
		}
	})
}
