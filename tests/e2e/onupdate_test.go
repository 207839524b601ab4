package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/harness"
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

// postOnUpdate sends body to threepidd's onupdate endpoint over HTTP with the
// given Authorization header ("" for none) and checks the answer against the
// spec's error schema.
func postOnUpdate(t *testing.T, e *harness.Env, auth string, body []byte) harness.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL+onupdate.Path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST onupdate: %v", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	harness.CheckResponse(t, http.MethodPost, onupdate.Path, resp.StatusCode, data)
	return harness.Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
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
			alice := e.NewUser("replay-alice")
			harness.Expect(t, e.Bind(t, alice, 0, "email", "replay@example.org"), 200, "")
			body := onUpdateBody(t, "replay@example.org", true, alice.ID, "")
			auth := signOnUpdate(t, e.IS[0].Key(), is0, harness.ServerName, body)
			expectApplied(t, postOnUpdate(t, e, auth, body))
			expectLost(t, e, alice, 0, "email", "replay@example.org", true, alice.ID)
			// Bound again: a replay that were applied would drop it again.
			harness.Expect(t, e.Bind(t, alice, 0, "email", "replay@example.org"), 200, "")
			expectApplied(t, postOnUpdate(t, e, auth, body))
			if ns := e.Notifications(t, alice); len(ns) != 1 {
				t.Fatalf("%d notifications after the replay, want 1: %+v", len(ns), ns)
			}
			if got := e.BindingsOf(t, alice, "replay@example.org"); len(got) != 1 {
				t.Fatalf("the replay dropped the new binding: %v", got)
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
