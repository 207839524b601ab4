package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
)

// onUpdateBody is an onupdate body; mxid and medium are left out when empty.
func onUpdateBody(t *testing.T, threepid string, deleted bool, mxid, medium string) []byte {
	t.Helper()
	body, err := json.Marshal(onupdate.Body{Threepid: threepid, Deleted: deleted, MXID: mxid, Medium: medium})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// signOnUpdate returns the Authorization header of an onupdate request from
// origin to destination whose content is signed.
func signOnUpdate(t *testing.T, key *signingkey.Key, origin, destination string, signed []byte) string {
	t.Helper()
	auth, err := federation.SignRequest(key, origin, destination, federation.DestinationField, http.MethodPost, onupdate.Path, signed)
	if err != nil {
		t.Fatalf("sign onupdate: %v", err)
	}
	return auth
}

// onUpdateRequest is one raw onupdate request: uri is the path and query sent
// (the endpoint when empty); auth are Authorization values (none, one, or
// several headers); chunked hides the Content-Length.
type onUpdateRequest struct {
	uri     string
	auth    []string
	body    []byte
	chunked bool
}

// sendOnUpdateRequest sends r to threepidd (the harness checks the answer
// against the spec) and fails on a server error.
func sendOnUpdateRequest(t *testing.T, e *harness.Env, r onUpdateRequest) harness.Response {
	t.Helper()
	uri := r.uri
	if uri == "" {
		uri = onupdate.Path
	}
	req := support.Request{Method: http.MethodPost, URL: e.URL + uri, Body: r.body, Header: http.Header{"Authorization": r.auth}}
	if r.chunked {
		req.Body = bytes.NewReader(r.body) // a reader, sent chunked
	}
	resp := harness.Send(t, req)
	if resp.Status >= 500 {
		t.Fatalf("POST %s: server error %s", uri, resp)
	}
	return resp
}

// postOnUpdate sends body to threepidd's onupdate endpoint with the given
// Authorization header ("" for none).
func postOnUpdate(t *testing.T, e *harness.Env, auth string, body []byte) harness.Response {
	t.Helper()
	r := onUpdateRequest{body: body}
	if auth != "" {
		r.auth = []string{auth}
	}
	return sendOnUpdateRequest(t, e, r)
}

// onUpdateFrom sends body as fake identity server i, validly signed.
func onUpdateFrom(t *testing.T, e *harness.Env, i int, body []byte) harness.Response {
	t.Helper()
	return postOnUpdate(t, e, signOnUpdate(t, e.IS[i].Key(), e.IS[i].Name(), harness.ServerName, body), body)
}

// expectApplied fails unless r is 200 {}.
func expectApplied(t *testing.T, r harness.Response) {
	t.Helper()
	harness.Expect(t, r, 200, "")
	if string(r.Body) != "{}" {
		t.Fatalf("answer body %s, want {}", r.Body)
	}
}

// bindDirectly records a binding as if u had bound address on IS i, without
// the bind call (which would take the 3PID over from its holder).
func bindDirectly(t *testing.T, e *harness.Env, u harness.User, i int, medium, address string) {
	t.Helper()
	err := e.Server.Store.UpsertBinding(context.Background(), storage.Binding{
		UserID: u.ID, Medium: medium, Address: address, IDServer: e.IS[i].Name(), BoundAt: time.Now().UnixMilli(),
	})
	if err != nil {
		t.Fatalf("record binding: %v", err)
	}
}

// snapshot renders every binding and notification of users, to compare
// before and after a request that must change nothing.
func snapshot(t *testing.T, e *harness.Env, users ...harness.User) string {
	t.Helper()
	var b bytes.Buffer
	for _, u := range users {
		bs, err := e.Server.Store.BindingsOf(context.Background(), u.ID)
		if err != nil {
			t.Fatalf("load bindings: %v", err)
		}
		fmt.Fprintf(&b, "%s bindings %+v\nnotifications %+v\n", u.ID, bs, e.Notifications(t, u))
	}
	return b.String()
}

// expectLost fails unless u has exactly one notification, about address with
// deleted and mxid, from IS i, and no binding of address on IS i left.
// expectReplayAppliedOnce sends a signed onupdate taking u's binding of
// address over to accept, binds it again, and replays the same request to
// replay (the same instance or another on the same store): the replay is
// answered as applied but changes nothing, one notification, the new binding kept.
func expectReplayAppliedOnce(t *testing.T, accept, replay *harness.Env, u harness.User, address string) {
	t.Helper()
	harness.Expect(t, accept.Bind(t, u, 0, "email", address), 200, "")
	body := onUpdateBody(t, address, true, u.ID, "")
	auth := signOnUpdate(t, accept.IS[0].Key(), accept.IS[0].Name(), harness.ServerName, body)
	expectApplied(t, postOnUpdate(t, accept, auth, body))
	expectLost(t, accept, u, 0, "email", address, true, u.ID)
	// Bound again: a replay that were applied would drop it again.
	harness.Expect(t, accept.Bind(t, u, 0, "email", address), 200, "")
	expectApplied(t, postOnUpdate(t, replay, auth, body))
	if ns := replay.Notifications(t, u); len(ns) != 1 {
		t.Fatalf("%d notifications after the replay, want 1: %+v", len(ns), ns)
	}
	if got := replay.BindingsOf(t, u, address); len(got) != 1 {
		t.Fatalf("the replay dropped the new binding: %v", got)
	}
}

func expectLost(t *testing.T, e *harness.Env, u harness.User, i int, medium, address string, deleted bool, mxid string) {
	t.Helper()
	ns := e.Notifications(t, u)
	if len(ns) != 1 {
		t.Fatalf("%s has %d notifications, want 1: %+v", u.ID, len(ns), ns)
	}
	n := ns[0]
	if n.UserID != u.ID || n.Medium != medium || n.Address != address || n.Deleted != deleted || n.MXID != mxid || n.Origin != e.IS[i].Name() {
		t.Fatalf("%s notified %+v, want %s %s deleted=%v mxid=%q from %s", u.ID, n, medium, address, deleted, mxid, e.IS[i].Name())
	}
	for _, is := range e.BindingsOf(t, u, address) {
		if is == e.IS[i].Name() {
			t.Fatalf("%s still holds %s on %s", u.ID, address, is)
		}
	}
}

// expectUntouched fails unless u holds address on exactly the identity
// servers named and has no notification.
func expectUntouched(t *testing.T, e *harness.Env, u harness.User, address string, servers ...string) {
	t.Helper()
	if got := e.BindingsOf(t, u, address); fmt.Sprint(got) != fmt.Sprint(servers) {
		t.Fatalf("%s holds %s on %v, want %v", u.ID, address, got, servers)
	}
	if ns := e.Notifications(t, u); len(ns) != 0 {
		t.Fatalf("%s notified: %+v", u.ID, ns)
	}
}

// TestOnUpdate: what valid updates from an identity server do to the
// bindings threepidd recorded and to its users' notification streams.
func TestOnUpdate(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 2})
		is0, is1 := e.IS[0].Name(), e.IS[1].Name()

		t.Run("deletion drops the binding and notifies that user", func(t *testing.T) {
			alice, bob := e.NewUser("del-alice"), e.NewUser("del-bob")
			harness.Expect(t, e.Bind(t, alice, 0, "email", "del-alice@example.org"), 200, "")
			harness.Expect(t, e.Bind(t, bob, 0, "email", "del-bob@example.org"), 200, "")
			expectApplied(t, onUpdateFrom(t, e, 0, onUpdateBody(t, "del-alice@example.org", true, alice.ID, "")))
			expectLost(t, e, alice, 0, "email", "del-alice@example.org", true, alice.ID)
			expectUntouched(t, e, bob, "del-bob@example.org", is0)
		})

		t.Run("takeover by a remote user drops every local holder", func(t *testing.T) {
			alice, bob, carol := e.NewUser("take-alice"), e.NewUser("take-bob"), e.NewUser("take-carol")
			harness.Expect(t, e.Bind(t, alice, 0, "email", "shared@example.org"), 200, "")
			bindDirectly(t, e, bob, 0, "email", "shared@example.org")
			harness.Expect(t, e.Bind(t, carol, 0, "email", "take-carol@example.org"), 200, "")
			expectApplied(t, onUpdateFrom(t, e, 0, onUpdateBody(t, "shared@example.org", false, "@bob:other.tld", "")))
			expectLost(t, e, alice, 0, "email", "shared@example.org", false, "@bob:other.tld")
			expectLost(t, e, bob, 0, "email", "shared@example.org", false, "@bob:other.tld")
			expectUntouched(t, e, carol, "take-carol@example.org", is0)
		})

		t.Run("update about a 3PID never recorded changes nothing", func(t *testing.T) {
			alice := e.NewUser("never-alice")
			harness.Expect(t, e.Bind(t, alice, 0, "email", "never-alice@example.org"), 200, "")
			before := snapshot(t, e, alice)
			expectApplied(t, onUpdateFrom(t, e, 0, onUpdateBody(t, "stranger@example.org", false, "@x:other.tld", "")))
			expectApplied(t, onUpdateFrom(t, e, 0, onUpdateBody(t, "stranger@example.org", true, "", "")))
			if after := snapshot(t, e, alice); after != before {
				t.Fatalf("state changed:\n%s\nto\n%s", before, after)
			}
		})

		t.Run("replay adds no second notification", func(t *testing.T) {
			expectReplayAppliedOnce(t, e, e, e.NewUser("replay-alice"), "replay@example.org")
		})

		t.Run("a reformatted replay is still a replay", func(t *testing.T) {
			alice := e.NewUser("reformat-alice")
			harness.Expect(t, e.Bind(t, alice, 0, "email", "reformat@example.org"), 200, "")
			body := onUpdateBody(t, "reformat@example.org", true, alice.ID, "")
			auth := signOnUpdate(t, e.IS[0].Key(), is0, harness.ServerName, body)
			expectApplied(t, postOnUpdate(t, e, auth, body))
			harness.Expect(t, e.Bind(t, alice, 0, "email", "reformat@example.org"), 200, "")
			// The captured request with its keys reordered and spaces added:
			// the signature (over canonical JSON) still verifies.
			reformatted := []byte("{ \"mxid\": \"" + alice.ID + "\",\n  \"deleted\": true,\n  \"threepid\": \"reformat@example.org\" }")
			expectApplied(t, postOnUpdate(t, e, auth, reformatted))
			if ns := e.Notifications(t, alice); len(ns) != 1 {
				t.Fatalf("%d notifications after the reformatted replay, want 1: %+v", len(ns), ns)
			}
			if got := e.BindingsOf(t, alice, "reformat@example.org"); len(got) != 1 {
				t.Fatalf("the reformatted replay dropped the new binding: %v", got)
			}
		})

		t.Run("ts: a genuine repeat applies, stale or future ts refused", func(t *testing.T) {
			alice := e.NewUser("ts-alice")
			const address = "ts@example.org"
			takeover := func(ts time.Time) []byte {
				body, err := json.Marshal(onupdate.Body{Threepid: address, MXID: "@bob:other.tld", TS: ts.UnixMilli()})
				if err != nil {
					t.Fatal(err)
				}
				return body
			}
			// bob takes alice's address, alice binds it again, bob takes it
			// again: the same update but for its ts, applied twice.
			var last int64
			for i := range 2 {
				harness.Expect(t, e.Bind(t, alice, 0, "email", address), 200, "")
				// A new ts for each, even within one millisecond (the
				// two rounds can be that fast): same content and ts is a replay.
				ts := max(time.Now().UnixMilli(), last+1)
				last = ts
				expectApplied(t, onUpdateFrom(t, e, 0, takeover(time.UnixMilli(ts))))
				if ns := e.Notifications(t, alice); len(ns) != i+1 {
					t.Fatalf("after takeover %d alice has %d notifications", i+1, len(ns))
				}
			}
			harness.Expect(t, e.Bind(t, alice, 0, "email", address), 200, "")
			before := snapshot(t, e, alice)
			for name, ts := range map[string]time.Time{"stale": time.Now().Add(-11 * time.Minute), "future": time.Now().Add(5 * time.Minute)} {
				harness.Expect(t, onUpdateFrom(t, e, 0, takeover(ts)), 400, "M_INVALID_PARAM")
				if after := snapshot(t, e, alice); after != before {
					t.Fatalf("a %s update changed the state:\n%s\nto\n%s", name, before, after)
				}
			}
		})

		t.Run("medium inferred", func(t *testing.T) {
			alice, bob := e.NewUser("phone-alice"), e.NewUser("phone-bob")
			harness.Expect(t, e.Bind(t, alice, 0, "msisdn", "447700900123"), 200, "")
			harness.Expect(t, e.Bind(t, bob, 0, "email", "phone-bob@example.org"), 200, "")
			expectApplied(t, onUpdateFrom(t, e, 0, onUpdateBody(t, "+447700900123", false, "@eve:other.tld", "")))
			expectLost(t, e, alice, 0, "msisdn", "447700900123", false, "@eve:other.tld")
			expectApplied(t, onUpdateFrom(t, e, 0, onUpdateBody(t, "phone-bob@example.org", true, bob.ID, "")))
			expectLost(t, e, bob, 0, "email", "phone-bob@example.org", true, bob.ID)
		})

		t.Run("canonical form before lookup", func(t *testing.T) {
			alice := e.NewUser("canon-alice")
			harness.Expect(t, e.Bind(t, alice, 0, "email", "canon-alice@example.org"), 200, "")
			expectApplied(t, onUpdateFrom(t, e, 0, onUpdateBody(t, " Canon-Alice@Example.ORG", true, alice.ID, "email")))
			expectLost(t, e, alice, 0, "email", "canon-alice@example.org", true, alice.ID)
		})

		t.Run("deletion without mxid drops every local record", func(t *testing.T) {
			alice, bob := e.NewUser("nomxid-alice"), e.NewUser("nomxid-bob")
			harness.Expect(t, e.Bind(t, alice, 0, "email", "nomxid@example.org"), 200, "")
			bindDirectly(t, e, bob, 0, "email", "nomxid@example.org")
			expectApplied(t, onUpdateFrom(t, e, 0, onUpdateBody(t, "nomxid@example.org", true, "", "")))
			expectLost(t, e, alice, 0, "email", "nomxid@example.org", true, "")
			expectLost(t, e, bob, 0, "email", "nomxid@example.org", true, "")
		})

		t.Run("update naming a local user without a record creates none", func(t *testing.T) {
			alice, carol := e.NewUser("norec-alice"), e.NewUser("norec-carol")
			harness.Expect(t, e.Bind(t, alice, 0, "email", "norec@example.org"), 200, "")
			expectApplied(t, onUpdateFrom(t, e, 0, onUpdateBody(t, "norec@example.org", false, carol.ID, "")))
			expectLost(t, e, alice, 0, "email", "norec@example.org", false, carol.ID)
			expectUntouched(t, e, carol, "norec@example.org")
			// A deletion naming her creates nothing either.
			expectApplied(t, onUpdateFrom(t, e, 0, onUpdateBody(t, "norec@example.org", true, carol.ID, "")))
			expectUntouched(t, e, carol, "norec@example.org")
		})

		t.Run("records on another identity server untouched", func(t *testing.T) {
			alice, bob := e.NewUser("other-alice"), e.NewUser("other-bob")
			harness.Expect(t, e.Bind(t, alice, 0, "email", "two-servers@example.org"), 200, "")
			harness.Expect(t, e.Bind(t, alice, 1, "email", "two-servers@example.org"), 200, "")
			bindDirectly(t, e, bob, 1, "email", "two-servers@example.org")
			expectApplied(t, onUpdateFrom(t, e, 0, onUpdateBody(t, "two-servers@example.org", true, "", "")))
			expectLost(t, e, alice, 0, "email", "two-servers@example.org", true, "")
			if got := e.BindingsOf(t, alice, "two-servers@example.org"); len(got) != 1 || got[0] != is1 {
				t.Fatalf("alice holds the 3PID on %v, want [%s]", got, is1)
			}
			expectUntouched(t, e, bob, "two-servers@example.org", is1)
		})
	})
}

// TestOnUpdateRejected: each bad request is refused with its status and
// errcode and changes nothing.
func TestOnUpdateRejected(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 2, NoOnUpdate: []int{1}})
		alice := e.NewUser("victim")
		// Bound on both identity servers, so that any request wrongly
		// accepted would drop a binding and notify her.
		harness.Expect(t, e.Bind(t, alice, 0, "email", "victim@example.org"), 200, "")
		harness.Expect(t, e.Bind(t, alice, 1, "email", "victim@example.org"), 200, "")
		is0 := e.IS[0]
		deletion := onUpdateBody(t, "victim@example.org", true, alice.ID, "")
		valid := signOnUpdate(t, is0.Key(), is0.Name(), harness.ServerName, deletion)
		// Another key under the same key ID.
		stranger, err := signingkey.Generate(strings.TrimPrefix(is0.KeyID(), "ed25519:"))
		if err != nil {
			t.Fatal(err)
		}
		huge := append(bytes.Repeat([]byte(" "), 10<<20), deletion...)
		cases := []struct {
			name    string
			auth    string
			body    []byte
			status  int
			errcode string
		}{
			{"no header", "", deletion, 401, "M_UNAUTHORIZED"},
			{"garbage header", `X-Matrix origin=,,key="`, deletion, 401, "M_UNAUTHORIZED"},
			{"bearer token", "Bearer " + alice.Token, deletion, 401, "M_UNAUTHORIZED"},
			{"signature by another key", signOnUpdate(t, stranger, is0.Name(), harness.ServerName, deletion), deletion, 401, "M_UNAUTHORIZED"},
			{"identity server not allowed to call", signOnUpdate(t, e.IS[1].Key(), e.IS[1].Name(), harness.ServerName, deletion), deletion, 403, "M_FORBIDDEN"},
			{"origin not configured", signOnUpdate(t, stranger, "evil.test", harness.ServerName, deletion), deletion, 401, "M_UNAUTHORIZED"},
			{"body changed after signing", signOnUpdate(t, is0.Key(), is0.Name(), harness.ServerName, onUpdateBody(t, "other@example.org", true, "", "")), deletion, 401, "M_UNAUTHORIZED"},
			{"wrong destination", signOnUpdate(t, is0.Key(), is0.Name(), "other.hs", deletion), deletion, 401, "M_UNAUTHORIZED"},
			{"deleted missing", "", []byte(`{"threepid":"victim@example.org","mxid":"` + alice.ID + `"}`), 400, "M_MISSING_PARAM"},
			{"mxid malformed", "", []byte(`{"threepid":"victim@example.org","deleted":false,"mxid":"victim"}`), 400, "M_INVALID_PARAM"},
			{"10 MB body", valid, huge, 413, "M_TOO_LARGE"},
			{"not JSON", valid, []byte("threepid=victim@example.org&deleted=true"), 400, "M_NOT_JSON"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				auth := c.auth
				if auth == "" && c.status == 400 {
					auth = signOnUpdate(t, is0.Key(), is0.Name(), harness.ServerName, c.body)
				}
				before := snapshot(t, e, alice)
				harness.Expect(t, postOnUpdate(t, e, auth, c.body), c.status, c.errcode)
				if after := snapshot(t, e, alice); after != before {
					t.Fatalf("state changed:\n%s\nto\n%s", before, after)
				}
			})
		}
		// The same deletion, validly signed, is applied: the cases above
		// failed for the reason they name.
		expectApplied(t, postOnUpdate(t, e, valid, deletion))
		expectLost(t, e, alice, 0, "email", "victim@example.org", true, alice.ID)
	})
}

// TestOnUpdateRateLimit: over ratelimit.onupdate_per_server an identity
// server gets 429 M_LIMIT_EXCEEDED with Retry-After and nothing is applied;
// another identity server has its own bucket.
func TestOnUpdateRateLimit(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{
			IdentityServers: 2,
			RateLimitYAML:   "{requesttoken_per_ip: {per_second: 0}, requesttoken_per_address: {per_second: 0}, onupdate_per_server: {per_second: 0.001, burst: 2}}",
		})
		alice := e.NewUser("limited")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "limited@example.org"), 200, "")
		noop := onUpdateBody(t, "nobody@example.org", true, "", "")
		for i := range 2 {
			expectApplied(t, onUpdateFrom(t, e, 0, onUpdateBody(t, fmt.Sprintf("nobody%d@example.org", i), true, "", "")))
		}
		before := snapshot(t, e, alice)
		r := onUpdateFrom(t, e, 0, onUpdateBody(t, "limited@example.org", true, alice.ID, ""))
		harness.Expect(t, r, 429, "M_LIMIT_EXCEEDED")
		if secs, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || secs < 1 {
			t.Fatalf("Retry-After = %q, want a positive number of seconds", r.Header.Get("Retry-After"))
		}
		if after := snapshot(t, e, alice); after != before {
			t.Fatalf("state changed:\n%s\nto\n%s", before, after)
		}
		expectApplied(t, onUpdateFrom(t, e, 1, noop))
	})
}

// TestOnUpdateBodies: body variants, validly signed by an identity
// server allowed to call. Refused bodies change nothing; accepted ones do
// exactly what DESIGN.md says.
func TestOnUpdateBodies(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		alice, bob := e.NewUser("ou-alice"), e.NewUser("ou-bob")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "ou-alice@example.org"), 200, "")
		harness.Expect(t, e.Bind(t, bob, 0, "msisdn", "447700900999"), 200, "")
		is0 := e.IS[0]
		signed := func(body []byte) onUpdateRequest {
			return onUpdateRequest{auth: []string{signOnUpdate(t, is0.Key(), is0.Name(), harness.ServerName, body)}, body: body}
		}
		del := `"threepid":"ou-alice@example.org","deleted":true`
		// A deletion of alice's binding, padded with spaces to n bytes.
		padded := func(n int) []byte {
			body := []byte(`{` + del + `,"mxid":"` + alice.ID + `"}`)
			return append(body, bytes.Repeat([]byte(" "), n-len(body))...)
		}
		refused := []struct {
			name    string
			body    string
			status  int
			errcode string
		}{
			{"deleted as a string", `{` + strings.Replace(del, "true", `"true"`, 1) + `}`, 400, "M_BAD_JSON"},
			{"deleted as a number", `{` + strings.Replace(del, "true", `1`, 1) + `}`, 400, "M_BAD_JSON"},
			{"deleted null", `{"threepid":"ou-alice@example.org","deleted":null}`, 400, "M_MISSING_PARAM"},
			{"threepid missing", `{"deleted":true}`, 400, "M_MISSING_PARAM"},
			{"threepid a number", `{"threepid":447700900999,"deleted":true}`, 400, "M_BAD_JSON"},
			{"threepid empty", `{"threepid":"","deleted":true}`, 400, "M_INVALID_PARAM"},
			{"threepid blank", `{"threepid":"   ","deleted":true}`, 400, "M_INVALID_PARAM"},
			{"threepid neither email nor phone", `{"threepid":"ou-alice","deleted":true}`, 400, "M_INVALID_PARAM"},
			{"mxid missing on an update", `{"threepid":"ou-alice@example.org","deleted":false}`, 400, "M_MISSING_PARAM"},
			{"mxid null on an update", `{"threepid":"ou-alice@example.org","deleted":false,"mxid":null}`, 400, "M_MISSING_PARAM"},
			{"mxid empty on an update", `{"threepid":"ou-alice@example.org","deleted":false,"mxid":""}`, 400, "M_INVALID_PARAM"},
			{"mxid a number", `{"threepid":"ou-alice@example.org","deleted":false,"mxid":1}`, 400, "M_BAD_JSON"},
			{"mxid without @", `{"threepid":"ou-alice@example.org","deleted":false,"mxid":"eve:other.tld"}`, 400, "M_INVALID_PARAM"},
			{"mxid without server", `{"threepid":"ou-alice@example.org","deleted":false,"mxid":"@eve"}`, 400, "M_INVALID_PARAM"},
			{"mxid empty localpart", `{"threepid":"ou-alice@example.org","deleted":false,"mxid":"@:other.tld"}`, 400, "M_INVALID_PARAM"},
			{"mxid with a space", `{"threepid":"ou-alice@example.org","deleted":false,"mxid":"@e ve:other.tld"}`, 400, "M_INVALID_PARAM"},
			{"mxid invalid on a deletion", `{` + del + `,"mxid":"ou-alice"}`, 400, "M_INVALID_PARAM"},
			{"medium msisdn for an e-mail address", `{` + del + `,"medium":"msisdn"}`, 400, "M_INVALID_PARAM"},
			{"medium email for a phone number", `{"threepid":"447700900999","deleted":true,"medium":"email"}`, 400, "M_INVALID_PARAM"},
			{"medium unknown", `{` + del + `,"medium":"phone"}`, 400, "M_INVALID_PARAM"},
			{"medium a number", `{` + del + `,"medium":1}`, 400, "M_BAD_JSON"},
			{"phone number with spaces", `{"threepid":"+44 7700 900999","deleted":true}`, 400, "M_INVALID_PARAM"},
			{"array", `[{` + del + `}]`, 400, "M_BAD_JSON"},
			{"string", `"ou-alice@example.org"`, 400, "M_BAD_JSON"},
			{"number", `1`, 400, "M_BAD_JSON"},
			{"null", `null`, 400, "M_BAD_JSON"},
			{"empty body", ``, 400, "M_NOT_JSON"},
			{"trailing garbage", `{` + del + `} x`, 400, "M_NOT_JSON"},
			{"form-encoded", `threepid=ou-alice%40example.org&deleted=true`, 400, "M_NOT_JSON"},
		}
		for _, c := range refused {
			t.Run(c.name, func(t *testing.T) {
				signedBody := []byte(c.body)
				if !json.Valid(signedBody) { // SignRequest signs JSON only: sign another body
					signedBody = []byte(`{` + del + `}`)
				}
				req := signed(signedBody)
				req.body = []byte(c.body)
				before := snapshot(t, e, alice, bob)
				harness.Expect(t, sendOnUpdateRequest(t, e, req), c.status, c.errcode)
				if after := snapshot(t, e, alice, bob); after != before {
					t.Fatalf("state changed:\n%s\nto\n%s", before, after)
				}
			})
		}

		t.Run("64 KiB + 1 is too large, with or without Content-Length", func(t *testing.T) {
			before := snapshot(t, e, alice, bob)
			for _, chunked := range []bool{false, true} {
				req := signed(padded(64<<10 + 1))
				req.chunked = chunked
				harness.Expect(t, sendOnUpdateRequest(t, e, req), 413, "M_TOO_LARGE")
			}
			if after := snapshot(t, e, alice, bob); after != before {
				t.Fatalf("state changed:\n%s\nto\n%s", before, after)
			}
		})

		t.Run("a deletion naming a remote user changes nothing", func(t *testing.T) {
			before := snapshot(t, e, alice, bob)
			expectApplied(t, sendOnUpdateRequest(t, e, signed([]byte(`{`+del+`,"mxid":"@ou-alice:other.tld"}`))))
			if after := snapshot(t, e, alice, bob); after != before {
				t.Fatalf("state changed:\n%s\nto\n%s", before, after)
			}
		})

		t.Run("an update naming the holder changes nothing", func(t *testing.T) {
			before := snapshot(t, e, alice, bob)
			expectApplied(t, sendOnUpdateRequest(t, e, signed([]byte(`{"threepid":"ou-alice@example.org","deleted":false,"mxid":"`+alice.ID+`"}`))))
			if after := snapshot(t, e, alice, bob); after != before {
				t.Fatalf("state changed:\n%s\nto\n%s", before, after)
			}
		})

		t.Run("non-canonical phone number, extra fields ignored", func(t *testing.T) {
			body := fmt.Sprintf(`{"threepid":" +447700900999 ","deleted":false,"mxid":"@eve:other.tld","medium":"msisdn","ts":%d,"signatures":{},"extra":{"x":[1]}}`, time.Now().UnixMilli())
			expectApplied(t, sendOnUpdateRequest(t, e, signed([]byte(body))))
			expectLost(t, e, bob, 0, "msisdn", "447700900999", false, "@eve:other.tld")
		})

		t.Run("exactly 64 KiB is accepted", func(t *testing.T) {
			expectApplied(t, sendOnUpdateRequest(t, e, signed(padded(64<<10))))
			expectLost(t, e, alice, 0, "email", "ou-alice@example.org", true, alice.ID)
		})
	})
}

// keyServer is an identity server's /_matrix/identity/v2/pubkey/ endpoint
// that answers each key ID as told and counts the requests for each.
type keyServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits map[string]int
}

// Key IDs the keyServer misbehaves for; any other unknown ID is a 404.
const (
	keyGarbage   = "ed25519:garbage"   // 200, not JSON
	keyHuge      = "ed25519:huge"      // 200, a 1 MiB JSON body
	keyShort     = "ed25519:short"     // 200, a public key of 3 bytes
	keyNotBase64 = "ed25519:notbase64" // 200, a public key that is not base64
	keyFails     = "ed25519:fails"     // 500
	keyHangs     = "ed25519:hangs"     // never answers
)

// newKeyServer serves keys (by key ID) and the misbehaving IDs above.
func newKeyServer(t *testing.T, keys ...*signingkey.Key) *keyServer {
	t.Helper()
	ks := &keyServer{hits: map[string]int{}}
	stop := make(chan struct{})
	ks.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := strings.CutPrefix(r.URL.Path, "/_matrix/identity/v2/pubkey/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		ks.mu.Lock()
		ks.hits[id]++
		ks.mu.Unlock()
		for _, k := range keys {
			if string(k.ID) == id {
				fmt.Fprintf(w, `{"public_key":%q}`, k.PublicBase64())
				return
			}
		}
		switch id {
		case keyGarbage:
			_, _ = io.WriteString(w, "<html>not a key</html>")
		case keyHuge:
			fmt.Fprintf(w, `{"public_key":"%s"}`, strings.Repeat("A", 1<<20))
		case keyShort:
			_, _ = io.WriteString(w, `{"public_key":"AAAA"}`)
		case keyNotBase64:
			_, _ = io.WriteString(w, `{"public_key":"!!!! not base64 !!!!"}`)
		case keyFails:
			http.Error(w, `{"errcode":"M_UNKNOWN"}`, http.StatusInternalServerError)
		case keyHangs:
			select {
			case <-r.Context().Done():
			case <-stop:
			}
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errcode":"M_NOT_FOUND","error":"The key was not found."}`)
		}
	}))
	t.Cleanup(func() {
		close(stop)
		ks.srv.Close()
	})
	return ks
}

// hitsOf returns how often key ID id was asked for.
func (ks *keyServer) hitsOf(id string) int {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.hits[id]
}

// signedHeader signs a request and returns its parsed X-Matrix header, so
// that tests can render it in other shapes.
func signedHeader(t *testing.T, key *signingkey.Key, origin, destination, method, uri string, body []byte) federation.XMatrix {
	t.Helper()
	auth, err := federation.SignRequest(key, origin, destination, federation.DestinationField, method, uri, body)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	x, err := federation.ParseXMatrix(auth)
	if err != nil {
		t.Fatalf("parse own header %q: %v", auth, err)
	}
	return x
}

// TestOnUpdateXMatrix: X-Matrix header variants, origins named by
// server_name or signing_name, pinned keys and key endpoints that misbehave.
// A refused request changes nothing; an accepted one drops alice's binding on
// the identity server that sent it and notifies her.
func TestOnUpdateXMatrix(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		good, err := signingkey.Generate("good")
		if err != nil {
			t.Fatal(err)
		}
		pin, err := signingkey.Generate("pin")
		if err != nil {
			t.Fatal(err)
		}
		impostor, err := signingkey.Generate("good") // same key ID, another key
		if err != nil {
			t.Fatal(err)
		}
		ks := newKeyServer(t, good, pin)
		const named, signing, pinned, quiet = "named.test", "sig.named.test", "pinned.test", "quiet.test"
		e := harness.Start(t, b, harness.Options{ExtraYAML: fmt.Sprintf("identity_servers:\n"+
			"  - {server_name: %s, signing_name: %s, base_url: %q, onupdate: true}\n"+
			"  - {server_name: %s, base_url: %q, onupdate: true, verify_keys: {%q: %q}}\n"+
			"  - {server_name: %s, base_url: %q, onupdate: false}\n",
			named, signing, ks.srv.URL, pinned, ks.srv.URL, pin.ID, pin.PublicBase64(), quiet, ks.srv.URL)})
		alice := e.NewUser("xm-alice")
		const address = "xm-alice@example.org"
		bindOn := func(servers ...string) {
			for _, is := range servers {
				if err := e.Server.Store.UpsertBinding(context.Background(), storage.Binding{
					UserID: alice.ID, Medium: "email", Address: address, IDServer: is, BoundAt: time.Now().UnixMilli(),
				}); err != nil {
					t.Fatal(err)
				}
			}
		}

		const post, path = http.MethodPost, onupdate.Path
		hs := harness.ServerName
		// quoted renders x with every parameter quoted, in this order.
		quoted := func(x federation.XMatrix) string {
			return fmt.Sprintf(`X-Matrix origin="%s",destination="%s",key="%s",sig="%s"`, x.Origin, x.Destination, x.KeyID, x.Signature)
		}
		// as signs body with key as origin and renders the header with render.
		type render func(x federation.XMatrix) []string
		one := func(f func(x federation.XMatrix) string) render {
			return func(x federation.XMatrix) []string { return []string{f(x)} }
		}
		standard := one(func(x federation.XMatrix) string { return x.String() })
		cases := []struct {
			name         string
			key          *signingkey.Key
			origin       string // signed as
			method, uri  string // signed for (default POST, the endpoint)
			dest         string // signed for (default this homeserver)
			sendURI      string // sent to (default uri)
			header       render
			alter        func(body []byte) []byte // applied after signing
			status       int
			errcode      string
			lostOn       string // the identity server whose record goes, when accepted
			notContacted string // a key ID the key server must not be asked for
		}{
			{name: "origin is server_name", key: good, origin: named, header: standard, status: 200, lostOn: named},
			{name: "origin is signing_name", key: good, origin: signing, header: standard, status: 200, lostOn: named},
			{name: "unquoted parameters", key: good, origin: named, status: 200, lostOn: named, header: one(func(x federation.XMatrix) string {
				return fmt.Sprintf("X-Matrix origin=%s,destination=%s,key=%s,sig=%s", x.Origin, x.Destination, x.KeyID, x.Signature)
			})},
			{name: "spaces around commas and equals", key: good, origin: named, status: 200, lostOn: named, header: one(func(x federation.XMatrix) string {
				return fmt.Sprintf(`X-Matrix  origin = "%s" ,  destination="%s" ,key= "%s",	sig="%s" `, x.Origin, x.Destination, x.KeyID, x.Signature)
			})},
			{name: "scheme and names in other cases, other order", key: good, origin: named, status: 200, lostOn: named, header: one(func(x federation.XMatrix) string {
				return fmt.Sprintf(`x-matrix SIG="%s",Key="%s",Destination="%s",ORIGIN="%s"`, x.Signature, x.KeyID, x.Destination, x.Origin)
			})},
			{name: "unknown parameter ignored", key: good, origin: named, status: 200, lostOn: named, header: one(func(x federation.XMatrix) string {
				return quoted(x) + `,org.example.extra="1"`
			})},
			{name: "no destination", key: good, origin: named, status: 200, lostOn: named, header: one(func(x federation.XMatrix) string {
				x.Destination = ""
				return x.String()
			})},
			{name: "reformatted body still verifies", key: good, origin: named, header: standard, status: 200, lostOn: named,
				alter: func(body []byte) []byte {
					var m map[string]any
					if err := json.Unmarshal(body, &m); err != nil {
						t.Fatal(err)
					}
					out, _ := json.MarshalIndent(m, "  ", "\t")
					return out
				}},
			{name: "query signed and sent", key: good, origin: named, uri: path + "?via=x", header: standard, status: 200, lostOn: named},
			{name: "pinned key", key: pin, origin: pinned, header: standard, status: 200, lostOn: pinned},

			{name: "destination of another server", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				x.Destination = "other.hs"
				return x.String()
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "signed for another destination, sent without one", key: good, origin: named, dest: "other.hs", header: one(func(x federation.XMatrix) string {
				x.Destination = ""
				return x.String()
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "empty destination", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				return strings.Replace(quoted(x), `destination="`+hs+`"`, `destination=""`, 1)
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "origin repeated", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				return quoted(x) + `,origin="` + x.Origin + `"`
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "origin repeated with another server", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				return quoted(x) + `,origin="` + pinned + `"`
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "sig repeated", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				return quoted(x) + `,sig="` + x.Signature + `"`
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "two Authorization headers", key: good, origin: named, header: func(x federation.XMatrix) []string {
				return []string{x.String(), x.String()}
			}, status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "origin missing", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				return fmt.Sprintf(`X-Matrix destination="%s",key="%s",sig="%s"`, x.Destination, x.KeyID, x.Signature)
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "unterminated quote", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				return strings.TrimSuffix(quoted(x), `"`)
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "scheme only", header: one(func(federation.XMatrix) string { return "X-Matrix" }), key: good, origin: named,
				status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "header over 4 KiB", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				return quoted(x) + `,pad="` + strings.Repeat("p", 4096) + `"`
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "signing_name in the header, server_name signed", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				x.Origin = signing
				return x.String()
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "origin not configured", key: good, origin: "stranger.test", header: standard, status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "origin configured without onupdate", key: good, origin: quiet, header: standard, status: 403, errcode: "M_FORBIDDEN"},
			{name: "another key under the same ID", key: impostor, origin: named, header: standard, status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "signature not base64", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				x.Signature = "not*base64"
				return x.String()
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "not an ed25519 key", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				x.KeyID = "curve25519:good"
				return x.String()
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key ID with a path", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				x.KeyID = "ed25519:../../v2/pubkey/ed25519:good"
				return x.String()
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key unknown to the identity server", key: good, origin: named, header: keyIDHeader("ed25519:nope"), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key answer not JSON", key: good, origin: named, header: keyIDHeader(keyGarbage), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key answer not JSON, again (cached)", key: good, origin: named, header: keyIDHeader(keyGarbage), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key answer of 1 MiB", key: good, origin: named, header: keyIDHeader(keyHuge), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key of 3 bytes", key: good, origin: named, header: keyIDHeader(keyShort), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key not base64", key: good, origin: named, header: keyIDHeader(keyNotBase64), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key endpoint fails", key: good, origin: named, header: keyIDHeader(keyFails), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "pinned server: unpinned key never fetched", key: pin, origin: pinned, header: keyIDHeader("ed25519:good"),
				status: 401, errcode: "M_UNAUTHORIZED", notContacted: "ed25519:good"},
			{name: "body altered after signing", key: good, origin: named, header: standard, status: 401, errcode: "M_UNAUTHORIZED",
				alter: func(body []byte) []byte {
					return bytes.Replace(body, []byte(`"deleted":true`), []byte(`"deleted":false`), 1)
				}},
			{name: "query added after signing", key: good, origin: named, header: standard, sendURI: path + "?via=x", status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "query removed after signing", key: good, origin: named, uri: path + "?via=x", sendURI: path, header: standard, status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "signed for another method", key: good, origin: named, method: http.MethodPut, header: standard, status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "signed for another path", key: good, origin: named, uri: "/_matrix/federation/v1/send/1", sendURI: path, header: standard, status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "Bearer token", key: good, origin: named, header: one(func(federation.XMatrix) string { return "Bearer " + alice.Token }), status: 401, errcode: "M_UNAUTHORIZED"},
		}
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				bindOn(named, pinned, quiet)
				before := snapshot(t, e, alice)
				notified := len(e.Notifications(t, alice))
				fetched := ks.hitsOf(c.notContacted)
				body := []byte(fmt.Sprintf(`{"threepid":%q,"deleted":true,"mxid":%q,"n":%d}`, address, alice.ID, i))
				method, uri, dest := c.method, c.uri, hs
				if method == "" {
					method = post
				}
				if uri == "" {
					uri = path
				}
				if c.dest != "" {
					dest = c.dest
				}
				x := signedHeader(t, c.key, c.origin, dest, method, uri, body)
				req := onUpdateRequest{uri: uri, auth: c.header(x), body: body}
				if c.sendURI != "" {
					req.uri = c.sendURI
				}
				if c.alter != nil {
					req.body = c.alter(body)
				}
				r := sendOnUpdateRequest(t, e, req)
				harness.Expect(t, r, c.status, c.errcode)
				if c.status != 200 {
					if after := snapshot(t, e, alice); after != before {
						t.Fatalf("state changed:\n%s\nto\n%s", before, after)
					}
					if c.notContacted != "" && ks.hitsOf(c.notContacted) != fetched {
						t.Fatalf("key %s was fetched", c.notContacted)
					}
					return
				}
				if string(r.Body) != "{}" {
					t.Fatalf("answer %s, want {}", r.Body)
				}
				ns := e.Notifications(t, alice)
				if len(ns) != notified+1 || ns[len(ns)-1].Origin != c.lostOn {
					t.Fatalf("notifications %+v, want one more from %s", ns, c.lostOn)
				}
				for _, is := range e.BindingsOf(t, alice, address) {
					if is == c.lostOn {
						t.Fatalf("the binding on %s survived", is)
					}
				}
			})
		}
		t.Run("a replay signed under the other name is still a replay", func(t *testing.T) {
			bindOn(named)
			body := []byte(fmt.Sprintf(`{"threepid":%q,"deleted":true,"mxid":%q,"n":"replay"}`, address, alice.ID))
			send := func(origin string) {
				x := signedHeader(t, good, origin, hs, post, path, body)
				expectApplied(t, sendOnUpdateRequest(t, e, onUpdateRequest{auth: []string{x.String()}, body: body}))
			}
			send(named)
			bindOn(named)
			before := snapshot(t, e, alice)
			send(signing)
			if after := snapshot(t, e, alice); after != before {
				t.Fatalf("the replay changed the state:\n%s\nto\n%s", before, after)
			}
		})
		// A key endpoint that failed is asked once, not on every request.
		if n := ks.hitsOf(keyGarbage); n != 1 {
			t.Fatalf("the failing key was fetched %d times, want 1", n)
		}
		// A key endpoint that never answers: refused in bounded time (the
		// fetch timeout, 10 s; once, as storage plays no part).
		t.Run("key endpoint hangs", func(t *testing.T) {
			if b.Driver != "sqlite" {
				t.Skip("run on SQLite only")
			}
			before := snapshot(t, e, alice)
			body := []byte(fmt.Sprintf(`{"threepid":%q,"deleted":true,"mxid":%q,"n":"hang"}`, address, alice.ID))
			x := signedHeader(t, good, named, hs, post, path, body)
			x.KeyID = keyHangs
			began := time.Now()
			harness.Expect(t, sendOnUpdateRequest(t, e, onUpdateRequest{auth: []string{x.String()}, body: body}), 401, "M_UNAUTHORIZED")
			if took := time.Since(began); took > 15*time.Second {
				t.Fatalf("refused after %v", took)
			}
			if after := snapshot(t, e, alice); after != before {
				t.Fatalf("state changed:\n%s\nto\n%s", before, after)
			}
		})
	})
}

// keyIDHeader renders the header with its key ID replaced by id.
func keyIDHeader(id string) func(x federation.XMatrix) []string {
	return func(x federation.XMatrix) []string {
		x.KeyID = id
		return []string{x.String()}
	}
}

// TestOnUpdateKeyFetchFlood: forged requests naming a configured identity
// server with random key IDs, 100 a second from one address (127.0.0.2),
// cannot spend the key fetches the identity server itself needs: in the
// middle of the flood, a genuine update signed with a key threepidd never
// fetched (the identity server rotated it) still applies.
func TestOnUpdateKeyFetchFlood(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		is := e.IS[0]
		alice := e.NewUser("flood-alice")
		const address = "flood-alice@example.org"
		harness.Expect(t, e.Bind(t, alice, 0, "email", address), 200, "") // fetches ed25519:0
		rotated := is.RotateKey("rotated")
		body := onUpdateBody(t, address, true, alice.ID, "")

		forger := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext,
		}}
		const perSecond, seconds = 100, 3
		var (
			wg       sync.WaitGroup
			sent     atomic.Int32
			accepted atomic.Int32
		)
		tick := time.NewTicker(time.Second / perSecond)
		defer tick.Stop()
		flood := make(chan struct{})
		go func() {
			defer close(flood)
			for i := range perSecond * seconds {
				<-tick.C
				wg.Go(func() {
					defer sent.Add(1)
					x := federation.XMatrix{Origin: is.Name(), Destination: harness.ServerName,
						KeyID: fmt.Sprintf("ed25519:forged%d", i), Signature: strings.Repeat("A", 86)}
					req, err := http.NewRequest(http.MethodPost, e.URL+onupdate.Path, bytes.NewReader(body))
					if err != nil {
						t.Error(err)
						return
					}
					req.Header.Set("Authorization", x.String())
					resp, err := forger.Do(req)
					if err != nil {
						t.Errorf("forged request %d: %v", i, err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusUnauthorized {
						accepted.Add(1)
					}
				})
			}
		}()
		// Well into the flood, the budget a single per-server budget would
		// have had (10 fetches, then one a second) is long spent.
		for sent.Load() < perSecond*seconds/2 {
			time.Sleep(10 * time.Millisecond)
		}
		r := postOnUpdate(t, e, signOnUpdate(t, rotated, is.Name(), harness.ServerName, body), body)
		<-flood
		wg.Wait()
		expectApplied(t, r)
		expectLost(t, e, alice, 0, "email", address, true, alice.ID)
		if n := accepted.Load(); n != 0 {
			t.Fatalf("%d forged requests were not refused with 401", n)
		}
	})
}

// TestOnUpdateErrorsSayNothing: an unauthenticated caller learns nothing from
// a refusal: not whether the origin is configured (or allowed to call), not
// the identity server's URL, not what its key endpoint answered. Every
// refusal is the same 401 body; the reason is in threepidd's log.
func TestOnUpdateErrorsSayNothing(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		const secretText = "keystore-7.corp.internal is read-only"
		keys := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `{"errcode":"M_FORBIDDEN","error":%q}`, secretText)
		}))
		t.Cleanup(keys.Close)
		internal := keys.URL + "/internal-keys"
		key, err := signingkey.Generate("0")
		if err != nil {
			t.Fatal(err)
		}
		const open, quiet = "open.test", "quiet.test"
		e := harness.Start(t, b, harness.Options{ExtraYAML: fmt.Sprintf("identity_servers:\n"+
			"  - {server_name: %s, base_url: %q, onupdate: true}\n"+
			"  - {server_name: %s, base_url: %q, onupdate: false}\n", open, internal, quiet, internal)})
		logs := support.CaptureLogs(t)
		body := onUpdateBody(t, "someone@example.org", true, "", "")
		for _, c := range []struct {
			name, auth string
			logged     []string // in the log line of the refusal
		}{
			{"no header", "", []string{"missing Authorization"}},
			{"origin not configured", signOnUpdate(t, key, "stranger.test", harness.ServerName, body), []string{`origin \"stranger.test\" is not a configured identity server`}},
			{"key endpoint refuses", signOnUpdate(t, key, open, harness.ServerName, body), []string{internal, secretText}},
			{"origin configured without onupdate, not proven", signOnUpdate(t, key, quiet, harness.ServerName, body), []string{quiet, internal}},
		} {
			t.Run(c.name, func(t *testing.T) {
				r := postOnUpdate(t, e, c.auth, body)
				harness.Expect(t, r, 401, "M_UNAUTHORIZED")
				if string(r.Body) != `{"errcode":"M_UNAUTHORIZED","error":"Unauthorized"}` {
					t.Fatalf("answer %s, want the generic 401", r.Body)
				}
				var line string
				for _, l := range strings.Split(logs.String(), "\n") {
					if strings.Contains(l, "onupdate refused") {
						line = l
					}
				}
				for _, want := range c.logged {
					if !strings.Contains(line, want) {
						t.Errorf("log line %q lacks %q", line, want)
					}
				}
			})
		}
	})
}
