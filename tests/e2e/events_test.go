package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/events"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
)

// TestEventsWebhook: add, bind, lost (bind takeover and onupdate), unbind
// and remove reach the events webhook, signed, although it was down when they
// happened and threepidd restarted meanwhile.
func TestEventsWebhook(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		down := func(context.Context, events.Event) (int, string) { return 503, `{}` }
		h := newHook(t, down)
		e := harness.Start(t, b, harness.Options{IdentityServers: 1,
			ExtraYAML: fmt.Sprintf("policy: {events_webhook: {url: %q, secret: %q}}\n", h.srv.URL, hookSecret)})
		is := e.IS[0]
		alice, bob, carol := e.NewUser("alice"), e.NewUser("bob"), e.NewUser("carol")
		e.AddEmail(t, alice, "alice@example.org")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "alice@example.org"), 200, "")
		harness.Expect(t, e.Bind(t, bob, 0, "email", "alice@example.org"), 200, "") // alice loses it
		if got := unbindResult(t, e.Do("POST", unbindPath, bob.Token, map[string]any{"medium": "email", "address": "alice@example.org"})); got != "success" {
			t.Fatalf("unbind: %s", got)
		}
		harness.Expect(t, e.Do("POST", deletePath, alice.Token, map[string]any{"medium": "email", "address": "alice@example.org"}), 200, "")
		harness.Expect(t, e.Bind(t, carol, 0, "email", "carol@example.org"), 200, "")
		if err := onupdate.Send(context.Background(), nil, is.Key(), is.Name(), harness.ServerName, e.URL,
			onupdate.Body{Threepid: "carol@example.org", Medium: "email", Deleted: true, MXID: carol.ID}); err != nil {
			t.Fatalf("onupdate: %v", err)
		}

		want := []string{
			"user_threepid add @alice:hs.test alice@example.org ",
			"identity_server_binding bind @alice:hs.test alice@example.org id1.test",
			"identity_server_binding lost @alice:hs.test alice@example.org id1.test",
			"identity_server_binding bind @bob:hs.test alice@example.org id1.test",
			"identity_server_binding unbind @bob:hs.test alice@example.org id1.test",
			"user_threepid remove @alice:hs.test alice@example.org ",
			"identity_server_binding bind @carol:hs.test carol@example.org id1.test",
			"identity_server_binding lost @carol:hs.test carol@example.org id1.test",
		}
		// Every event is tried while the receiver is down, and kept.
		support.WaitFor(t, "a failed delivery of every event", func() bool { return len(distinct(h.calls(), 503)) == len(want) }, 30*time.Second)
		e.Restart()
		h.setAnswer(func(context.Context, events.Event) (int, string) { return 204, "" })
		// Generous: an event whose delivery the restart interrupted waits
		// for its outbox lease to expire.
		support.WaitFor(t, "every event delivered", func() bool { return len(distinct(h.calls(), 204)) == len(want) }, 3*time.Minute)

		var got []string
		for _, ev := range distinct(h.calls(), 204) {
			got = append(got, strings.Join([]string{ev.Callback, string(ev.Op), ev.UserID, ev.Address, ev.IDServer}, " "))
			if ev.At <= 0 || ev.Medium != "email" {
				t.Errorf("event %+v", ev)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("delivered events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if n := h.refusedCount(); n != 0 {
			t.Fatalf("%d deliveries had a bad signature", n)
		}
	})
}

// TestEventsOff: without events_webhook.url nothing is queued.
func TestEventsOff(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		u := e.NewUser("quiet")
		e.AddEmail(t, u, "quiet@example.org")
		harness.Expect(t, e.Bind(t, u, 0, "email", "quiet@example.org"), 200, "")
		if n, err := e.Server.Store.CountOutbox(context.Background(), events.OutboxKind); err != nil || n != 0 {
			t.Fatalf("%d events queued with events off (%v)", n, err)
		}
	})
}

var eventKeys = []string{"event_id", "callback", "op", "user_id", "medium", "address", "id_server", "at"}

// TestEventsAfterEveryChange: every applied change (add, remove, bind, unbind,
// lost by takeover and by onupdate, an admin removal, a deactivation through
// the relay and one through the admin API) reaches the events webhook once,
// with the documented body and signature, although the receiver was down and
// threepidd restarted in between. The mirror is on, so events pass through it.
func TestEventsAfterEveryChange(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		h := newRawHook(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) int { return reply(w, 503, `{}`) })
		e := harness.Start(t, b, harness.Options{IdentityServers: 1, HomeserverYAML: mirrorYAML,
			ExtraYAML: fmt.Sprintf("admin_token: %s\npolicy: {events_webhook: {url: %q, secret: %q}}\n", adminToken, h.srv.URL, hookSecret)})
		e.HS.SetAdminToken(hsAdminToken)
		is := e.IS[0]
		alice, bob, carol, dave, erin := e.NewUser("alice"), e.NewUser("bob"), e.NewUser("carol"), e.NewUser("dave"), e.NewUser("erin")
		e.AddEmail(t, alice, "alice@example.org")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "alice@example.org"), 200, "")
		harness.Expect(t, e.Bind(t, bob, 0, "email", "alice@example.org"), 200, "")
		if got := unbindResult(t, e.Do("POST", unbindPath, bob.Token, map[string]any{"medium": "email", "address": "alice@example.org"})); got != "success" {
			t.Fatalf("unbind: %s", got)
		}
		harness.Expect(t, e.Do("POST", deletePath, alice.Token, map[string]any{"medium": "email", "address": "alice@example.org"}), 200, "")
		e.AddEmail(t, carol, "carol@example.org")
		harness.Expect(t, e.Bind(t, carol, 0, "email", "carol@example.org"), 200, "")
		if err := onupdate.Send(context.Background(), nil, is.Key(), is.Name(), harness.ServerName, e.URL,
			onupdate.Body{Threepid: "carol@example.org", Medium: "email", Deleted: true, MXID: carol.ID}); err != nil {
			t.Fatalf("onupdate: %v", err)
		}
		harness.Expect(t, e.Do("DELETE", adminPrefix+"/users/%40carol%3Ahs.test/threepids/email/carol%40example.org", adminToken, nil), 200, "")
		e.AddEmail(t, dave, "dave@example.org")
		harness.Expect(t, e.Bind(t, dave, 0, "email", "dave@example.org"), 200, "")
		r := e.Do("POST", deactivateV3, dave.Token, map[string]any{})
		session, _ := r.JSON(t)["session"].(string)
		harness.Expect(t, e.Do("POST", deactivateV3, dave.Token, map[string]any{"auth": dave.PasswordAuth(session)}), 200, "")
		e.AddEmail(t, erin, "erin@example.org")
		harness.Expect(t, e.Do("POST", adminPrefix+"/users/%40erin%3Ahs.test/deactivate", adminToken, nil), 200, "")

		want := []string{
			"user_threepid add @alice:hs.test alice@example.org ",
			"identity_server_binding bind @alice:hs.test alice@example.org id1.test",
			"identity_server_binding lost @alice:hs.test alice@example.org id1.test",
			"identity_server_binding bind @bob:hs.test alice@example.org id1.test",
			"identity_server_binding unbind @bob:hs.test alice@example.org id1.test",
			"user_threepid remove @alice:hs.test alice@example.org ",
			"user_threepid add @carol:hs.test carol@example.org ",
			"identity_server_binding bind @carol:hs.test carol@example.org id1.test",
			"identity_server_binding lost @carol:hs.test carol@example.org id1.test",
			"user_threepid remove @carol:hs.test carol@example.org ",
			"user_threepid add @dave:hs.test dave@example.org ",
			"identity_server_binding bind @dave:hs.test dave@example.org id1.test",
			"identity_server_binding unbind @dave:hs.test dave@example.org id1.test",
			"user_threepid remove @dave:hs.test dave@example.org ",
			"user_threepid add @erin:hs.test erin@example.org ",
			"user_threepid remove @erin:hs.test erin@example.org ",
		}
		ids := func(status int) map[string]int {
			out := map[string]int{}
			for _, c := range h.received() {
				if c.Status == status {
					var ev events.Event
					_ = json.Unmarshal(c.Body, &ev)
					out[ev.ID]++
				}
			}
			return out
		}
		support.WaitFor(t, "a failed delivery of every event", func() bool { return len(ids(503)) == len(want) }, 30*time.Second)
		e.Restart()
		h.set(func(w http.ResponseWriter, _ *http.Request, _ []byte) int { return reply(w, 200, `{}`) })
		support.WaitFor(t, "every event delivered", func() bool { return len(ids(200)) == len(want) }, 3*time.Minute)
		time.Sleep(2 * time.Second) // anything delivered twice would show by now
		for id, n := range ids(200) {
			if n != 1 {
				t.Errorf("event %s delivered %d times", id, n)
			}
		}
		var got []string
		for _, c := range h.received() {
			if c.Status != 200 {
				continue
			}
			if !c.Verified {
				t.Fatalf("an event failed the receiver's signature check: %s", c.Body)
			}
			m := checkKeys(t, c.Body, eventKeys...)
			if at, _ := m["at"].(float64); at <= 0 || m["medium"] != "email" || m["event_id"] == "" {
				t.Errorf("event %s", c.Body)
			}
			got = append(got, fmt.Sprintf("%s %s %s %s %s", m["callback"], m["op"], m["user_id"], m["address"], m["id_server"]))
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("delivered events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if n, err := e.Server.Store.CountOutbox(context.Background(), events.OutboxKind); err != nil || n != 0 {
			t.Fatalf("%d events still queued (%v)", n, err)
		}
	})
}
