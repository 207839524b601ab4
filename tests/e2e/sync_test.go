package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	tpsync "github.com/threepidd/threepidd/sync"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
)

const syncPath = "/_matrix/client/v3/sync"

// syncBody is the part of a /sync answer the tests look at.
type syncBody struct {
	NextBatch string                  `json:"next_batch"`
	Rooms     *json.RawMessage        `json:"rooms"`
	Threepids map[string]tpsync.Entry `json:"threepids"`
}

// syncAsync sends GET /sync?<query> with token from a goroutine (which must
// not fail the test itself).
func syncAsync(baseURL, token, query string) <-chan syncResult {
	done := make(chan syncResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		r, err := support.Do(ctx, "GET", baseURL+syncPath+"?"+query, token, nil)
		done <- syncResult{r, err}
	}()
	return done
}

// syncResult is the outcome of a /sync made in the background.
type syncResult struct {
	support.Response
	err error
}

// receive waits for a background sync and decodes its 200 answer.
func receive(t *testing.T, done <-chan syncResult, within time.Duration) (syncBody, []byte) {
	t.Helper()
	select {
	case r := <-done:
		if r.err != nil || r.Status != 200 {
			t.Fatalf("sync: %d %v: %s", r.Status, r.err, r.Body)
		}
		var b syncBody
		if err := json.Unmarshal(r.Body, &b); err != nil {
			t.Fatalf("sync body %s: %v", r.Body, err)
		}
		return b, r.Body
	case <-time.After(within):
		t.Fatalf("the sync did not return within %v", within)
		return syncBody{}, nil
	}
}

// doSync sends a /sync and decodes its 200 answer.
func doSync(t *testing.T, e *harness.Env, u harness.User, query string) syncBody {
	t.Helper()
	b, _ := receive(t, syncAsync(e.URL, u.Token, query), 60*time.Second)
	return b
}

// upstreamPart decodes a composite token, failing the test if it is not one.
func upstreamPart(t *testing.T, token string) string {
	t.Helper()
	tok, err := tpsync.ParseToken(token)
	if err != nil || !tok.HasPos {
		t.Fatalf("next_batch %q is not a composite token (%v)", token, err)
	}
	return tok.Upstream
}

// waitSyncRequests polls until the fake homeserver has received n /sync requests.
func waitSyncRequests(t *testing.T, e *harness.Env, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(e.HS.SyncRequests()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the homeserver got %d /sync requests, want %d", len(e.HS.SyncRequests()), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// takeOver makes the identity server of e.IS[i] report that mxid now holds address.
func takeOver(t *testing.T, e *harness.Env, i int, address, mxid string) {
	t.Helper()
	is := e.IS[i]
	err := onupdate.Send(context.Background(), nil, is.Key(), is.Name(), harness.ServerName, e.URL,
		onupdate.Body{Threepid: address, Deleted: false, MXID: mxid})
	if err != nil {
		t.Fatalf("onupdate: %v", err)
	}
}

// TestSyncOnUpdateWakesLongPoll: a binding made through /3pid/bind is taken
// over on the identity server; its onupdate ends alice's 30 s long-poll at
// once with the section and her old upstream token, the upstream request is
// cancelled, and the next sync does not repeat it. Bob never sees it.
func TestSyncOnUpdateWakesLongPoll(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		alice, bob := e.NewUser("alice"), e.NewUser("bob")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "alice@example.org"), 200, "")
		e.HS.PushEvent(alice.ID, json.RawMessage(`{"type":"m.room.message","content":{"body":"hi"}}`))

		first := doSync(t, e, alice, "")
		if first.Rooms == nil || !strings.Contains(string(*first.Rooms), `"hi"`) || len(first.Threepids) != 0 {
			t.Fatalf("first sync: %+v", first)
		}
		oldUpstream := upstreamPart(t, first.NextBatch)

		// A long-poll that the homeserver ends (an event) keeps its rooms.
		done := syncAsync(e.URL, alice.Token, "timeout=30000&since="+url.QueryEscape(first.NextBatch))
		waitSyncRequests(t, e, 2)
		e.HS.PushEvent(alice.ID, json.RawMessage(`{"type":"m.room.message","content":{"body":"again"}}`))
		second, _ := receive(t, done, 10*time.Second)
		if second.Rooms == nil || !strings.Contains(string(*second.Rooms), `"again"`) || len(second.Threepids) != 0 {
			t.Fatalf("event sync: %+v", second)
		}
		if got := e.HS.SyncRequests()[1].Get("since"); got != oldUpstream {
			t.Fatalf("homeserver got since=%q, want the upstream part %q", got, oldUpstream)
		}
		oldUpstream = upstreamPart(t, second.NextBatch)

		// A long-poll that an onupdate ends.
		done = syncAsync(e.URL, alice.Token, "timeout=30000&since="+url.QueryEscape(second.NextBatch))
		waitSyncRequests(t, e, 3)
		began := time.Now()
		takeOver(t, e, 0, "alice@example.org", "@mallory:evil.test")
		woken, raw := receive(t, done, 10*time.Second)
		if took := time.Since(began); took > 2*time.Second {
			t.Fatalf("the long-poll returned %v after the onupdate", took)
		}
		want := tpsync.Entry{Deleted: false, MXID: "@mallory:evil.test", Medium: "email"}
		if len(woken.Threepids) != 1 || woken.Threepids["alice@example.org"] != want || woken.Rooms != nil {
			t.Fatalf("woken sync: %s", raw)
		}
		if got := upstreamPart(t, woken.NextBatch); got != oldUpstream {
			t.Fatalf("woken next_batch carries %q, want the old upstream token %q", got, oldUpstream)
		}
		deadline := time.Now().Add(10 * time.Second)
		for e.HS.SyncCancellations() != 1 && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		if n := e.HS.SyncCancellations(); n != 1 {
			t.Fatalf("the homeserver saw %d cancelled long-polls, want 1", n)
		}

		// No repeat; the homeserver is asked from the old upstream token.
		next := doSync(t, e, alice, "timeout=0&since="+url.QueryEscape(woken.NextBatch))
		if len(next.Threepids) != 0 {
			t.Fatalf("the notification came again: %+v", next)
		}
		reqs := e.HS.SyncRequests()
		if got := reqs[len(reqs)-1].Get("since"); got != oldUpstream {
			t.Fatalf("homeserver got since=%q after the wake, want %q", got, oldUpstream)
		}
		// Retrying the woken sync's own since gives the section again.
		again := doSync(t, e, alice, "timeout=0&since="+url.QueryEscape(second.NextBatch))
		if again.Threepids["alice@example.org"] != want {
			t.Fatalf("a retried since lost the section: %+v", again)
		}
		// Bob sees none of it, first sync included.
		if b := doSync(t, e, bob, ""); len(b.Threepids) != 0 {
			t.Fatalf("bob got alice's section: %+v", b.Threepids)
		}
	})
}

// TestSyncTwoInstances: two threepidd on one Postgres; an onupdate applied by
// A wakes a long-poll held by B (LISTEN/NOTIFY).
func TestSyncTwoInstances(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		if b.Driver != "postgres" {
			t.Skip("instances share wake-ups through Postgres only")
		}
		a := harness.Start(t, b, harness.Options{IdentityServers: 1})
		other := harness.Start(t, b, harness.Options{IdentityServers: 1})
		alice := other.NewUser("alice")
		if err := a.Server.Store.UpsertBinding(context.Background(), storage.Binding{UserID: alice.ID, Medium: "email",
			Address: "alice@example.org", IDServer: a.IS[0].Name(), BoundAt: time.Now().UnixMilli()}); err != nil {
			t.Fatal(err)
		}
		first := doSync(t, other, alice, "")
		done := syncAsync(other.URL, alice.Token, "timeout=30000&since="+url.QueryEscape(first.NextBatch))
		waitSyncRequests(t, other, 2)
		began := time.Now()
		takeOver(t, a, 0, "alice@example.org", "@mallory:evil.test")
		woken, raw := receive(t, done, 10*time.Second)
		if took := time.Since(began); took > 2*time.Second || woken.Threepids["alice@example.org"].MXID != "@mallory:evil.test" {
			t.Fatalf("after %v: %s", took, raw)
		}
	})
}

// TestSyncLargeBody: 20 MB bodies, plain and gzip, keep their content and get
// the section and token.
func TestSyncLargeBody(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		alice := e.NewUser("alice")
		pos, err := e.Server.Store.AppendNotification(context.Background(), storage.Notification{UserID: alice.ID,
			Medium: "email", Address: "alice@example.org", Deleted: true, MXID: alice.ID, Origin: "id1.test", At: time.Now().UnixMilli()})
		if err != nil {
			t.Fatal(err)
		}
		first := doSync(t, e, alice, "")
		since := tpsync.NewToken(upstreamPart(t, first.NextBatch), pos-1).String()
		const size = 20 << 20
		e.HS.SetSyncPadding(size)
		for _, gz := range []bool{false, true} {
			t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
				e.HS.SetSyncGzip(gz)
				r := harness.DoHeaders(t, "GET", e.URL+syncPath+"?since="+since, alice.Token, map[string]string{"Accept-Encoding": "gzip"})
				harness.Expect(t, r, 200, "")
				if r.Header.Get("Content-Encoding") != "" || r.Header.Get("Content-Length") != fmt.Sprint(len(r.Body)) || len(r.Body) < size {
					t.Fatalf("headers %v for %d bytes", r.Header, len(r.Body))
				}
				var got struct {
					syncBody
					Padding string `json:"org.threepidd.fake_padding"`
				}
				if err := json.Unmarshal(r.Body, &got); err != nil {
					t.Fatal(err)
				}
				if got.Threepids["alice@example.org"].MXID != alice.ID || strings.Trim(got.Padding, "x") != "" || len(got.Padding) < size-200 {
					t.Fatalf("threepids %v, padding of %d bytes", got.Threepids, len(got.Padding))
				}
			})
		}
	})
}

// upstreamRequests counts the requests the fake homeserver got on the
// endpoints that take sync tokens.
func upstreamRequests(e *harness.Env) int {
	return len(e.HS.SyncRequests()) + len(e.HS.KeyChangesRequests()) + len(e.HS.MessagesRequests()) +
		len(e.HS.RelationsRequests()) + len(e.HS.MembersRequests())
}

// TestSyncTokens: tokens on /sync, /keys/changes, /messages, /members (at)
// and the three relations endpoints (from, to). Composite ones work on all; ours garbled in any part are 400 M_INVALID_PARAM
// (never a 500) without asking the homeserver;
// upstream parts of any shape reach the homeserver byte for byte; the other
// query parameters are kept.
func TestSyncTokens(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		alice := e.NewUser("tok-alice")
		e.HS.PushEvent(alice.ID, json.RawMessage(`{"type":"m.room.message"}`))
		first := doSync(t, e, alice, "")
		upstream := upstreamPart(t, first.NextBatch)
		const (
			room      = "/_matrix/client/v3/rooms/%21fake:hs.test/messages"
			members   = "/_matrix/client/r0/rooms/%21fake:hs.test/members"
			relations = "/_matrix/client/v1/rooms/%21fake:hs.test/relations/%24ev"
		)
		endpoints := []struct{ path, param, other string }{
			{syncPath, "since", "timeout=0"},
			{syncPath, "since", "timeout=30000"},
			{"/_matrix/client/v3/keys/changes", "from", "to=" + url.QueryEscape(first.NextBatch)},
			{"/_matrix/client/r0/keys/changes", "to", "from=" + url.QueryEscape(first.NextBatch)},
			{room, "from", "dir=b"},
			{room, "to", "dir=f&from=" + url.QueryEscape(first.NextBatch)},
			{members, "at", "not_membership=leave"},
			{relations, "from", "dir=b"},
			{relations + "/m.thread", "to", "from=" + url.QueryEscape(first.NextBatch)},
			{relations + "/m.annotation/m.reaction", "from", "limit=2&to=" + url.QueryEscape(first.NextBatch)},
		}

		// First, while the homeserver has seen no request on these endpoints.
		t.Run("composite tokens on the endpoints that take them", func(t *testing.T) {
			token := url.QueryEscape(first.NextBatch)
			r := e.Do("GET", "/_matrix/client/v3/keys/changes?from="+token+"&to="+token, alice.Token, nil)
			harness.Expect(t, r, 200, "")
			if q := e.HS.KeyChangesRequests(); len(q) != 1 || q[0].Get("from") != upstream || q[0].Get("to") != upstream {
				t.Fatalf("homeserver got %v", q)
			}
			r = e.Do("GET", "/_matrix/client/v3/rooms/%21fake:hs.test/messages?dir=b&from="+token, alice.Token, nil)
			harness.Expect(t, r, 200, "")
			if start := r.JSON(t)["start"]; start != upstream {
				t.Fatalf("messages start %v, want the upstream token %q", start, upstream)
			}
			if q := e.HS.MessagesRequests(); len(q) != 1 || q[0].Get("from") != upstream {
				t.Fatalf("homeserver got %v", q)
			}
			// Element loads the members of an encrypted room at its last next_batch.
			harness.Expect(t, e.Do("GET", members+"?at="+token, alice.Token, nil), 200, "")
			if q := e.HS.MembersRequests(); len(q) != 1 || q[0].Get("at") != upstream {
				t.Fatalf("homeserver got %v", q)
			}
			harness.Expect(t, e.Do("GET", relations+"/m.thread?from="+token+"&to="+token, alice.Token, nil), 200, "")
			if q := e.HS.RelationsRequests(); len(q) != 1 || q[0].Get("from") != upstream || q[0].Get("to") != upstream {
				t.Fatalf("homeserver got %v", q)
			}
			for _, path := range []string{
				syncPath + "?since=tpd1.1.%25%25",
				syncPath + "?since=tpd1.x.czE&timeout=30000",
				"/_matrix/client/v3/keys/changes?from=tpd1.-1.czE",
				"/_matrix/client/r0/rooms/%21fake:hs.test/messages?from=tpd1.1",
			} {
				harness.Expect(t, e.Do("GET", path, alice.Token, nil), 400, "M_INVALID_PARAM")
			}
		})

		t.Run("garbled", func(t *testing.T) {
			for _, garbled := range []string{
				"tpd1.", "tpd1..", "tpd1.1", "tpd1..czE", "tpd1.x.czE", "tpd1.-1.czE", "tpd1.+1.czE", "tpd1.01.czE",
				"tpd1.1e3.czE", "tpd1. 1.czE", "tpd1.1 .czE", "tpd1.9999999999999999999.czE", "tpd1.123456789012345678901234567890.czE",
				"tpd1.1.czE=", "tpd1.1.c", "tpd1.1.czF", "tpd1.1.cz E", "tpd1.1.cz+E", "tpd1.1.cz/E", "tpd1.1.czE\n", "tpd1.1.\nczE",
				"tpd1.1.czE.", "tpd1.1.czE%", "tpd1.1." + base64URL("s1") + "." + base64URL("s2"), "tpd1.1.\x00", "tpd1.1.ÿ",
			} {
				for _, ep := range endpoints {
					before := upstreamRequests(e)
					path := ep.path + "?" + ep.other + "&" + ep.param + "=" + url.QueryEscape(garbled)
					harness.Expect(t, e.Do("GET", path, alice.Token, nil), 400, "M_INVALID_PARAM")
					if upstreamRequests(e) != before {
						t.Fatalf("%s: the homeserver was asked", path)
					}
				}
			}
		})

		t.Run("any upstream token reaches the homeserver unchanged", func(t *testing.T) {
			for _, up := range []string{
				"s1_2.3~4", "a.b_c~d", "100%", "%41%", "a+b c", "a&since=b", "a=b", "a/b?c#d", "é☃", "tpd1", "TPD1.1.czE",
				strings.Repeat("x.~_%", 2000), "\x01\x7f",
			} {
				for _, composite := range []bool{false, true} {
					token := up
					if composite {
						token = tpsync.NewToken(up, 1).String()
					}
					if !composite && strings.HasPrefix(up, "tpd1.") {
						continue
					}
					for _, ep := range endpoints {
						before := upstreamRequests(e)
						r := e.Do("GET", ep.path+"?"+ep.param+"="+url.QueryEscape(token)+"&"+ep.other, alice.Token, nil)
						// The fake homeserver refuses tokens it did not issue (but
						// for /messages' to): its 400 comes back unchanged.
						if r.Status != 200 && (r.Status != 400 || r.ErrCode() != "M_UNKNOWN") {
							t.Fatalf("%s %q: %d %s", ep.path, token, r.Status, r.Body)
						}
						if upstreamRequests(e) != before+1 {
							t.Fatalf("%s %q: %d upstream requests, want 1", ep.path, token, upstreamRequests(e)-before)
						}
						if got := lastQuery(e, ep.path).Get(ep.param); got != up {
							t.Fatalf("%s: homeserver got %s=%q, want %q", ep.path, ep.param, got, up)
						}
					}
				}
			}
		})

		t.Run("other parameters kept", func(t *testing.T) {
			filter := `{"room":{"timeline":{"limit":1}},"event_fields":["type"]}`
			r := e.Do("GET", syncPath+"?filter="+url.QueryEscape(filter)+"&full_state=true&set_presence=offline&timeout=0&since="+
				url.QueryEscape(first.NextBatch)+"&use_state_after=true", alice.Token, nil)
			harness.Expect(t, r, 200, "")
			q := lastQuery(e, syncPath)
			if q.Get("filter") != filter || q.Get("full_state") != "true" || q.Get("set_presence") != "offline" ||
				q.Get("timeout") != "0" || q.Get("since") != upstream || q.Get("use_state_after") != "true" {
				t.Fatalf("homeserver got %v", q)
			}
			r = e.Do("GET", room+"?dir=f&limit=3&filter="+url.QueryEscape(`{"types":["m.room.message"]}`)+
				"&from="+url.QueryEscape(first.NextBatch)+"&to="+url.QueryEscape(first.NextBatch), alice.Token, nil)
			harness.Expect(t, r, 200, "")
			q = lastQuery(e, room)
			if q.Get("dir") != "f" || q.Get("limit") != "3" || q.Get("filter") != `{"types":["m.room.message"]}` ||
				q.Get("from") != upstream || q.Get("to") != upstream {
				t.Fatalf("homeserver got %v", q)
			}
		})

		t.Run("wrong methods", func(t *testing.T) {
			before := upstreamRequests(e)
			for _, path := range []string{syncPath, "/_matrix/client/v3/keys/changes", room, "/_matrix/client/v3/rooms/%21a%2Fb:hs.test/messages", members, relations} {
				harness.Expect(t, e.Do("POST", path+"?from=x", alice.Token, map[string]any{}), 405, "M_UNRECOGNIZED")
			}
			if upstreamRequests(e) != before {
				t.Fatal("the homeserver was asked")
			}
		})

		t.Run("a plain upstream token is accepted", func(t *testing.T) {
			for _, ep := range endpoints[2:] {
				r := e.Do("GET", ep.path+"?"+ep.param+"="+url.QueryEscape(upstream)+"&"+strings.ReplaceAll(ep.other, url.QueryEscape(first.NextBatch), upstream), alice.Token, nil)
				harness.Expect(t, r, 200, "")
			}
			got := doSync(t, e, alice, "timeout=0&since="+url.QueryEscape(upstream))
			if upstreamPart(t, got.NextBatch) != upstream || len(got.Threepids) != 0 {
				t.Fatalf("sync from a plain token: %+v", got)
			}
		})
	})
}

// base64URL is the encoding of the upstream part of a composite token.
func base64URL(s string) string {
	tok := tpsync.NewToken(s, 1).String()
	return tok[strings.LastIndexByte(tok, '.')+1:]
}

// lastQuery is the query of the last request the fake homeserver got on path's endpoint.
func lastQuery(e *harness.Env, path string) url.Values {
	var qs []url.Values
	switch {
	case strings.HasSuffix(path, "/sync"):
		qs = e.HS.SyncRequests()
	case strings.HasSuffix(path, "/keys/changes"):
		qs = e.HS.KeyChangesRequests()
	case strings.HasSuffix(path, "/members"):
		qs = e.HS.MembersRequests()
	case strings.Contains(path, "/relations/"):
		qs = e.HS.RelationsRequests()
	default:
		qs = e.HS.MessagesRequests()
	}
	if len(qs) == 0 {
		return nil
	}
	return qs[len(qs)-1]
}

// TestSyncWakeUps: wake-ups reach exactly the user they are for,
// including a client still on a plain upstream token (its first sync through
// threepidd), and a client that leaves ends the upstream request.
func TestSyncWakeUps(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		alice, bob := e.NewUser("lp-alice"), e.NewUser("lp-bob")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "lp-alice@example.org"), 200, "")
		harness.Expect(t, e.Bind(t, bob, 0, "email", "lp-bob@example.org"), 200, "")
		want := tpsync.Entry{Deleted: false, MXID: "@mallory:evil.test", Medium: "email"}

		t.Run("a plain upstream token is woken too", func(t *testing.T) {
			plain := upstreamPart(t, doSync(t, e, alice, "").NextBatch)
			n := len(e.HS.SyncRequests())
			done := syncAsync(e.URL, alice.Token, "timeout=30000&since="+url.QueryEscape(plain))
			waitSyncRequests(t, e, n+1)
			takeOver(t, e, 0, "lp-alice@example.org", want.MXID)
			woken, raw := receive(t, done, 10*time.Second)
			if woken.Threepids["lp-alice@example.org"] != want {
				t.Fatalf("woken sync: %s", raw)
			}
			if got := upstreamPart(t, woken.NextBatch); got != plain {
				t.Fatalf("next_batch carries %q, want the client's %q", got, plain)
			}
			if again := doSync(t, e, alice, "timeout=0&since="+url.QueryEscape(woken.NextBatch)); len(again.Threepids) != 0 {
				t.Fatalf("repeated: %+v", again.Threepids)
			}
		})

		t.Run("another user's notification wakes nobody else", func(t *testing.T) {
			aliceSince := doSync(t, e, alice, "timeout=0&since="+url.QueryEscape(doSync(t, e, alice, "").NextBatch)).NextBatch
			bobSince := doSync(t, e, bob, "").NextBatch
			if len(doSync(t, e, bob, "").Threepids) != 0 {
				t.Fatal("bob's first sync shows alice's notification")
			}
			n := len(e.HS.SyncRequests())
			bobDone := syncAsync(e.URL, bob.Token, "timeout=1500&since="+url.QueryEscape(bobSince))
			aliceDone := syncAsync(e.URL, alice.Token, "timeout=30000&since="+url.QueryEscape(aliceSince))
			waitSyncRequests(t, e, n+2)
			if err := e.Server.Store.UpsertBinding(context.Background(), storage.Binding{UserID: alice.ID, Medium: "email",
				Address: "lp-alice2@example.org", IDServer: e.IS[0].Name(), BoundAt: time.Now().UnixMilli()}); err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			takeOver(t, e, 0, "lp-alice2@example.org", want.MXID)
			if woken, raw := receive(t, aliceDone, 10*time.Second); woken.Threepids["lp-alice2@example.org"] != want {
				t.Fatalf("alice's sync: %s", raw)
			}
			got, raw := receive(t, bobDone, 10*time.Second)
			if len(got.Threepids) != 0 || time.Since(began) < time.Second {
				t.Fatalf("bob's long-poll returned after %v: %s", time.Since(began), raw)
			}
		})

		t.Run("a client that leaves ends the upstream request", func(t *testing.T) {
			since := doSync(t, e, bob, "").NextBatch
			cancelled := e.HS.SyncCancellations()
			n := len(e.HS.SyncRequests())
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				_, err := support.Do(ctx, "GET", e.URL+syncPath+"?timeout=30000&since="+url.QueryEscape(since), bob.Token, nil)
				errc <- err
			}()
			waitSyncRequests(t, e, n+1)
			cancel()
			<-errc
			support.WaitFor(t, "the upstream long-poll to be cancelled", func() bool { return e.HS.SyncCancellations() > cancelled }, 10*time.Second)
			// Still serving, and bob's next notification is delivered (a
			// long-poll, as the wake-up comes after the onupdate's answer).
			takeOver(t, e, 0, "lp-bob@example.org", want.MXID)
			if got := doSync(t, e, bob, "timeout=10000&since="+url.QueryEscape(since)); got.Threepids["lp-bob@example.org"] != want {
				t.Fatalf("after the cancel: %+v", got)
			}
		})
	})
}

// TestSyncUpstreamAnswers: the homeserver's refusals pass through;
// gzip bodies come back decoded with the right length.
func TestSyncUpstreamAnswers(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		alice := e.NewUser("up-alice")
		// Appended before any sync of alice: wake-ups are delivered after the
		// commit, asynchronously, and a sync made meanwhile may not see it yet.
		pos, err := e.Server.Store.AppendNotification(context.Background(), storage.Notification{UserID: alice.ID,
			Medium: "email", Address: "up-alice@example.org", Deleted: true, Origin: "id1.test", At: time.Now().UnixMilli()})
		if err != nil {
			t.Fatal(err)
		}
		next := doSync(t, e, alice, "").NextBatch

		t.Run("gzip", func(t *testing.T) {
			e.HS.SetSyncGzip(true)
			defer e.HS.SetSyncGzip(false)
			for _, withSection := range []bool{false, true} {
				since := next
				if withSection {
					since = tpsync.NewToken(upstreamPart(t, next), pos-1).String()
				}
				r := harness.DoHeaders(t, "GET", e.URL+syncPath+"?timeout=0&since="+url.QueryEscape(since), alice.Token,
					map[string]string{"Accept-Encoding": "gzip"})
				harness.Expect(t, r, 200, "")
				var got syncBody
				if err := json.Unmarshal(r.Body, &got); err != nil || r.Header.Get("Content-Encoding") != "" {
					t.Fatalf("section %v: %v %v: %q", withSection, err, r.Header, r.Body)
				}
				if cl := r.Header.Get("Content-Length"); cl != "" && cl != fmt.Sprint(len(r.Body)) {
					t.Fatalf("Content-Length %s for %d bytes", cl, len(r.Body))
				}
				if upstreamPart(t, got.NextBatch) == "" || (len(got.Threepids) == 1) != withSection {
					t.Fatalf("section %v: %s", withSection, r.Body)
				}
			}
		})

		t.Run("refusals pass through", func(t *testing.T) {
			soft := e.NewUser("up-soft")
			e.HS.SoftLogout(soft.Token)
			gone := e.NewUser("up-gone")
			e.HS.RevokeToken(gone.Token)
			for _, path := range []string{
				"/_matrix/client/v3/keys/changes?from=" + url.QueryEscape(next),
				"/_matrix/client/v3/rooms/%21fake:hs.test/messages?dir=b&from=" + url.QueryEscape(next),
				syncPath + "?timeout=0&since=" + url.QueryEscape(next),
			} {
				harness.Expect(t, e.Do("GET", path, gone.Token, nil), 401, "M_UNKNOWN_TOKEN")
				r := e.Do("GET", path, soft.Token, nil)
				harness.Expect(t, r, 401, "M_UNKNOWN_TOKEN")
				if r.JSON(t)["soft_logout"] != true {
					t.Fatalf("%s: soft_logout lost: %s", path, r.Body)
				}
				harness.Expect(t, e.Do("GET", path, "", nil), 401, "M_MISSING_TOKEN")
			}
		})
	})
}

// TestSyncOldPositionRetention: a position from before the retention window
// (a client away for long, or a forged tpd1.0.) shows what a first sync shows,
// the notifications of the last sync.retention, never older ones; the next
// sync repeats none of them.
func TestSyncOldPositionRetention(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{ExtraYAML: "sync: {retention: 1h}\n"})
		alice := e.NewUser("ret-alice")
		for _, n := range []struct {
			address string
			at      time.Time
		}{{"old@example.org", time.Now().Add(-2 * time.Hour)}, {"new@example.org", time.Now()}} {
			if _, err := e.Server.Store.AppendNotification(context.Background(), storage.Notification{UserID: alice.ID,
				Medium: "email", Address: n.address, Deleted: true, Origin: "id1.test", At: n.at.UnixMilli()}); err != nil {
				t.Fatal(err)
			}
		}
		upstream := upstreamPart(t, doSync(t, e, alice, "").NextBatch)
		for _, since := range []string{tpsync.NewToken("", 0).String(), tpsync.NewToken(upstream, 0).String()} {
			got := doSync(t, e, alice, "timeout=0&since="+url.QueryEscape(since))
			if len(got.Threepids) != 1 || !got.Threepids["new@example.org"].Deleted {
				t.Fatalf("since=%s: threepids %v, want new@example.org only", since, got.Threepids)
			}
			if again := doSync(t, e, alice, "timeout=0&since="+url.QueryEscape(got.NextBatch)); len(again.Threepids) != 0 {
				t.Fatalf("repeated: %v", again.Threepids)
			}
		}
	})
}
