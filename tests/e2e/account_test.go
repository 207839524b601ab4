package e2e

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/threepid"
)

// TestEmailJourney is a user's whole e-mail journey: requestToken, the mail,
// the link, add through UIA, list, a restart, delete.
func TestEmailJourney(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		alice := e.NewUser("alice")
		secret := "s3cret-alice"
		sid := e.RequestEmailToken(t, secret, "  Alice@Example.ORG ", 1)
		mail := e.SMTP.WaitMail(t, "alice@example.org", 10*time.Second)
		if mail.From == "" || !strings.HasPrefix(mail.FirstLink(), e.Config.PublicBaseURL+"/_matrix/client/unstable/add_threepid/email/submit_token?") {
			t.Fatalf("mail link %q not under public_baseurl %s", mail.FirstLink(), e.Config.PublicBaseURL)
		}
		// Not validated yet: add refuses after UIA.
		harness.Expect(t, e.AddThreepid(t, alice, sid, secret), 400, "M_THREEPID_AUTH_FAILED")
		harness.Expect(t, harness.Do(t, "GET", mail.FirstLink(), "", nil), 200, "")
		harness.Expect(t, e.AddThreepid(t, alice, sid, secret), 200, "")

		list := e.Threepids(t, alice)
		if len(list) != 1 || list[0]["medium"] != "email" || list[0]["address"] != "alice@example.org" {
			t.Fatalf("threepids = %v", list)
		}
		if list[0]["validated_at"].(float64) <= 0 || list[0]["added_at"].(float64) <= 0 {
			t.Fatalf("timestamps missing: %v", list)
		}
		e.Restart()
		if list := e.Threepids(t, alice); len(list) != 1 {
			t.Fatalf("after restart threepids = %v", list)
		}
		r := e.Do("POST", "/_matrix/client/v3/account/3pid/delete", alice.Token, map[string]any{"medium": "email", "address": "ALICE@example.org"})
		harness.Expect(t, r, 200, "")
		if got := r.JSON(t)["id_server_unbind_result"]; got != "no-support" {
			t.Fatalf("id_server_unbind_result = %v", got)
		}
		if list := e.Threepids(t, alice); len(list) != 0 {
			t.Fatalf("after delete threepids = %v", list)
		}
		// r0 serves the same.
		harness.Expect(t, e.Do("GET", "/_matrix/client/r0/account/3pid", alice.Token, nil), 200, "")
	})
}

// TestPhoneJourney: requestToken, the SMS webhook, POST submit_url, add, restart, delete.
func TestPhoneJourney(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		bob := e.NewUser("bob")
		r := e.Do("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", map[string]any{
			"client_secret": "bob-secret", "country": "GB", "phone_number": "07700 900001", "send_attempt": 1,
		})
		harness.Expect(t, r, 200, "")
		body := r.JSON(t)
		sid, submitURL := body["sid"].(string), body["submit_url"].(string)
		if submitURL != e.Config.PublicBaseURL+"/_matrix/client/unstable/add_threepid/msisdn/submit_token" {
			t.Fatalf("submit_url = %q", submitURL)
		}
		// What Sydent answers and clients show (matrix-js-sdk, Element).
		if body["msisdn"] != "447700900001" || body["intl_fmt"] != "+44 7700 900001" || body["success"] != true {
			t.Fatalf("requestToken answer = %v, want msisdn, intl_fmt and success", body)
		}
		sms := e.SMS.WaitSMS(t, "447700900001", 10*time.Second)
		if len(sms.Token) < 6 || len(sms.Token) > 8 || !strings.Contains(sms.Text, sms.Token) {
			t.Fatalf("sms = %+v", sms)
		}
		wrong := "000000"
		if sms.Token == wrong {
			wrong = "111111"
		}
		harness.Expect(t, harness.Do(t, "POST", submitURL, "", map[string]any{"sid": sid, "client_secret": "bob-secret", "token": wrong}), 400, "M_TOKEN_INCORRECT")
		r = harness.Do(t, "POST", submitURL, "", map[string]any{"sid": sid, "client_secret": "bob-secret", "token": sms.Token})
		harness.Expect(t, r, 200, "")
		if r.JSON(t)["success"] != true {
			t.Fatalf("submit answer %s", r.Body)
		}
		harness.Expect(t, e.AddThreepid(t, bob, sid, "bob-secret"), 200, "")
		e.Restart()
		list := e.Threepids(t, bob)
		if len(list) != 1 || list[0]["medium"] != "msisdn" || list[0]["address"] != "447700900001" {
			t.Fatalf("threepids = %v", list)
		}
		harness.Expect(t, e.Do("POST", "/_matrix/client/v3/account/3pid/delete", bob.Token, map[string]any{"medium": "msisdn", "address": "+447700900001"}), 200, "")
		if list := e.Threepids(t, bob); len(list) != 0 {
			t.Fatalf("after delete threepids = %v", list)
		}
	})
}

// TestSendAttempt: the same send_attempt sends nothing new and keeps the sid;
// a higher one sends a new token for the same sid, and only the newest works.
func TestSendAttempt(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		sid1 := e.RequestEmailToken(t, "sec", "carol@example.org", 1)
		first := e.SMTP.WaitMail(t, "carol@example.org", 10*time.Second)
		if sid := e.RequestEmailToken(t, "sec", "carol@example.org", 1); sid != sid1 {
			t.Fatalf("repeat gave sid %s, want %s", sid, sid1)
		}
		if n := len(e.SMTP.Mails()); n != 1 {
			t.Fatalf("%d mails after a repeated send_attempt, want 1", n)
		}
		if sid := e.RequestEmailToken(t, "sec", "carol@example.org", 2); sid != sid1 {
			t.Fatalf("higher attempt gave sid %s, want %s", sid, sid1)
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(e.SMTP.Mails()) < 2 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		mails := e.SMTP.Mails()
		if len(mails) != 2 {
			t.Fatalf("%d mails, want 2", len(mails))
		}
		harness.Expect(t, harness.Do(t, "GET", first.FirstLink(), "", nil), 400, "")
		harness.Expect(t, harness.Do(t, "GET", mails[1].FirstLink(), "", nil), 200, "")
	})
}

// TestNextLink: the e-mail link answers 302 to next_link; a non-http next_link is refused.
func TestNextLink(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		r := e.Do("POST", "/_matrix/client/v3/account/3pid/email/requestToken", "", map[string]any{
			"client_secret": "x", "email": "dave@example.org", "send_attempt": 1, "next_link": "javascript:alert(1)"})
		harness.Expect(t, r, 400, "M_INVALID_PARAM")
		r = e.Do("POST", "/_matrix/client/v3/account/3pid/email/requestToken", "", map[string]any{
			"client_secret": "x", "email": "dave@example.org", "send_attempt": 1, "next_link": "https://app.example/done"})
		harness.Expect(t, r, 200, "")
		link := e.SMTP.WaitMail(t, "dave@example.org", 10*time.Second).FirstLink()
		r = harness.Do(t, "GET", link, "", nil)
		if r.Status != http.StatusFound || r.Header.Get("Location") != "https://app.example/done" {
			t.Fatalf("got %d Location %q", r.Status, r.Header.Get("Location"))
		}
	})
}

// TestAddRace: two users with validated sessions for one address add it at
// once; exactly one wins.
func TestAddRace(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		u1, u2 := e.NewUser("racer1"), e.NewUser("racer2")
		sid1 := e.RequestEmailToken(t, "sec1", "prize@example.org", 1)
		sid2 := e.RequestEmailToken(t, "sec2", "prize@example.org", 1)
		for _, m := range waitMails(t, e, 2) {
			harness.Expect(t, harness.Do(t, "GET", m, "", nil), 200, "")
		}
		// Get each user a UIA session first, then fire both adds together.
		sessions := make([]string, 2)
		for i, x := range []struct {
			u   harness.User
			sid string
			sec string
		}{{u1, sid1, "sec1"}, {u2, sid2, "sec2"}} {
			r := e.Do("POST", "/_matrix/client/v3/account/3pid/add", x.u.Token, map[string]any{"sid": x.sid, "client_secret": x.sec})
			harness.Expect(t, r, 401, "")
			sessions[i] = r.JSON(t)["session"].(string)
		}
		var wg sync.WaitGroup
		results := make([]harness.Response, 2)
		for i, x := range []struct {
			u   harness.User
			sid string
			sec string
		}{{u1, sid1, "sec1"}, {u2, sid2, "sec2"}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = harness.Do(t, "POST", e.URL+"/_matrix/client/v3/account/3pid/add", x.u.Token, map[string]any{
					"sid": x.sid, "client_secret": x.sec, "auth": x.u.PasswordAuth(sessions[i])})
			}()
		}
		wg.Wait()
		wins, inUse := 0, 0
		for _, r := range results {
			switch {
			case r.Status == 200:
				wins++
			case r.Status == 400 && r.ErrCode() == "M_THREEPID_IN_USE":
				inUse++
			default:
				t.Fatalf("unexpected answer %d %s", r.Status, r.Body)
			}
		}
		if wins != 1 || inUse != 1 {
			t.Fatalf("wins=%d in_use=%d", wins, inUse)
		}
		if n := len(e.Threepids(t, u1)) + len(e.Threepids(t, u2)); n != 1 {
			t.Fatalf("the address is held %d times", n)
		}
		// Now that it is held, requestToken refuses it for anyone.
		r := e.Do("POST", "/_matrix/client/v3/account/3pid/email/requestToken", "", map[string]any{
			"client_secret": "sec3", "email": "PRIZE@example.org", "send_attempt": 1})
		harness.Expect(t, r, 400, "M_THREEPID_IN_USE")
	})
}

// waitMails waits for n mails and returns their links.
func waitMails(t *testing.T, e *harness.Env, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(e.SMTP.Mails()) < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	mails := e.SMTP.Mails()
	if len(mails) < n {
		t.Fatalf("%d mails, want %d", len(mails), n)
	}
	links := make([]string, 0, n)
	for _, m := range mails[:n] {
		links = append(links, m.FirstLink())
	}
	return links
}

// TestSpentSessionReplay: a sid/client_secret that added a 3PID cannot add it again.
func TestSpentSessionReplay(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		u := e.NewUser("erin")
		sid := e.ValidateEmail(t, "sec", "erin@example.org")
		harness.Expect(t, e.AddThreepid(t, u, sid, "sec"), 200, "")
		harness.Expect(t, e.Do("POST", "/_matrix/client/v3/account/3pid/delete", u.Token, map[string]any{"medium": "email", "address": "erin@example.org"}), 200, "")
		harness.Expect(t, e.AddThreepid(t, u, sid, "sec"), 400, "M_THREEPID_AUTH_FAILED")
		if list := e.Threepids(t, u); len(list) != 0 {
			t.Fatalf("replayed session added %v", list)
		}
	})
}

// TestTokenAttempts: after five wrong tokens even the right one is refused;
// an expired token answers M_SESSION_EXPIRED.
func TestTokenAttempts(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		sid := e.RequestEmailToken(t, "sec", "frank@example.org", 1)
		link, _ := url.Parse(e.SMTP.WaitMail(t, "frank@example.org", 10*time.Second).FirstLink())
		token := link.Query().Get("token")
		if len(token) < 22 {
			t.Fatalf("e-mail token %q carries fewer than 128 bits", token)
		}
		submit := e.URL + "/_matrix/client/unstable/add_threepid/email/submit_token"
		for i := 0; i < 5; i++ {
			harness.Expect(t, harness.Do(t, "POST", submit, "", map[string]any{"sid": sid, "client_secret": "sec", "token": "wrong"}), 400, "M_TOKEN_INCORRECT")
		}
		harness.Expect(t, harness.Do(t, "POST", submit, "", map[string]any{"sid": sid, "client_secret": "sec", "token": token}), 400, "M_TOKEN_INCORRECT")
		// A wrong client_secret learns nothing about the session.
		harness.Expect(t, harness.Do(t, "POST", submit, "", map[string]any{"sid": sid, "client_secret": "other", "token": token}), 400, "M_INVALID_PARAM")

		sid2 := e.RequestEmailToken(t, "sec2", "gina@example.org", 1)
		past := time.Now().Add(-time.Minute).UnixMilli()
		if err := e.Server.Store.UpdateSessionToken(context.Background(), sid2, threepid.HashToken("known-token"), 1, past); err != nil {
			t.Fatal(err)
		}
		harness.Expect(t, harness.Do(t, "POST", submit, "", map[string]any{"sid": sid2, "client_secret": "sec2", "token": "known-token"}), 400, "M_SESSION_EXPIRED")
	})
}
