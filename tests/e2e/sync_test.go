package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	tpsync "github.com/threepidd/threepidd/sync"
	"github.com/threepidd/threepidd/tests/harness"
)

const syncPath = "/_matrix/client/v3/sync"

// syncBody is the part of a /sync answer the tests look at.
type syncBody struct {
	NextBatch string                  `json:"next_batch"`
	Rooms     *json.RawMessage        `json:"rooms"`
	Threepids map[string]tpsync.Entry `json:"threepids"`
}

// syncResult is the outcome of a /sync made in the background.
type syncResult struct {
	status int
	body   []byte
	err    error
}

// syncAsync sends GET /sync?<query> with token from a goroutine (which must
// not fail the test itself).
func syncAsync(baseURL, token, query string) <-chan syncResult {
	done := make(chan syncResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, "GET", baseURL+syncPath+"?"+query, nil)
		if err != nil {
			done <- syncResult{err: err}
			return
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- syncResult{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		done <- syncResult{resp.StatusCode, body, err}
	}()
	return done
}

// receive waits for a background sync and decodes its 200 answer.
func receive(t *testing.T, done <-chan syncResult, within time.Duration) (syncBody, []byte) {
	t.Helper()
	select {
	case r := <-done:
		if r.err != nil || r.status != 200 {
			t.Fatalf("sync: %d %v: %s", r.status, r.err, r.body)
		}
		var b syncBody
		if err := json.Unmarshal(r.body, &b); err != nil {
			t.Fatalf("sync body %s: %v", r.body, err)
		}
		return b, r.body
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

// TestSyncTokensElsewhere: composite tokens work on /keys/changes and
// /messages; garbled ones are 400 M_INVALID_PARAM, never a 500.
func TestSyncTokensElsewhere(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		alice := e.NewUser("alice")
		e.HS.PushEvent(alice.ID, json.RawMessage(`{"type":"m.room.message"}`))
		nextBatch := doSync(t, e, alice, "").NextBatch
		token, upstream := url.QueryEscape(nextBatch), upstreamPart(t, nextBatch)

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

		for _, path := range []string{
			syncPath + "?since=tpd1.1.%25%25",
			syncPath + "?since=tpd1.x.czE&timeout=30000",
			"/_matrix/client/v3/keys/changes?from=tpd1.-1.czE",
			"/_matrix/client/r0/rooms/%21fake:hs.test/messages?from=tpd1.1",
		} {
			harness.Expect(t, e.Do("GET", path, alice.Token, nil), 400, "M_INVALID_PARAM")
		}
	})
}
