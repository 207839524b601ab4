package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/account"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
	"github.com/threepidd/threepidd/threepid"
	"golang.org/x/net/html"
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
		harness.Expect(t, harness.OpenLink(t, mail.FirstLink()), 200, "")
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

// TestResend is Element's "Resend": the same send_attempt sends nothing new
// and keeps the sid; a higher one sends a second mail for the same sid, and
// the first mail's link still validates (every token of a session stays
// valid until it expires, as in Synapse). Once validated, the other mail's
// link answers as friendly as the first one opened twice.
func TestResend(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		u := e.NewUser("carol")
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
		second := e.SMTP.WaitMail(t, "carol@example.org", 10*time.Second)
		if first.FirstLink() == second.FirstLink() {
			t.Fatalf("the resent mail carries the first link again: %s", first.FirstLink())
		}
		harness.Expect(t, harness.OpenLink(t, first.FirstLink()), 200, "")
		for _, link := range []string{first.FirstLink(), second.FirstLink()} {
			if r := harness.OpenLink(t, link); r.Status != 200 || !strings.Contains(string(r.Body), "confirmed") {
				t.Fatalf("a link of the validated session: %d %s", r.Status, r.Body)
			}
		}
		harness.Expect(t, e.AddThreepid(t, u, sid1, "sec"), 200, "")
		expectListed(t, e, u, "email:carol@example.org")
	})
}

// TestMailLinkNeedsAPerson: loading the mail's link, as a mail scanner that
// pre-fetches links does, validates nothing: the page asks the person to
// confirm, and only its button (a form POST of the same values) validates
// the session, then redirects to next_link.
func TestMailLinkNeedsAPerson(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		u := e.NewUser("victim")
		r := e.Do("POST", requestTokenPath, "", map[string]any{
			"client_secret": "sec", "email": "victim@example.org", "send_attempt": 1, "next_link": "https://app.example/done"})
		harness.Expect(t, r, 200, "")
		sid := r.JSON(t)["sid"].(string)
		link := e.SMTP.WaitMail(t, "victim@example.org", 10*time.Second).FirstLink()
		for range 3 { // a scanner, then the person's browser, then a reload
			page := harness.Do(t, "GET", link, "", nil)
			if page.Status != 200 || !strings.HasPrefix(page.Header.Get("Content-Type"), "text/html") {
				t.Fatalf("the link answered %d %v: %s", page.Status, page.Header, page.Body)
			}
			if csp := page.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self' https://app.example") || !strings.Contains(csp, "default-src 'none'") {
				t.Fatalf("Content-Security-Policy %q", csp)
			}
			form, err := support.FindForm(link, page.Body)
			if err != nil || form.Method != "POST" || form.Action != e.Config.PublicBaseURL+emailSubmitPath {
				t.Fatalf("the page's form: %+v (%v): %s", form, err, page.Body)
			}
		}
		harness.Expect(t, e.AddThreepid(t, u, sid, "sec"), 400, "M_THREEPID_AUTH_FAILED")
		r = harness.OpenLink(t, link)
		if r.Status != http.StatusFound || r.Header.Get("Location") != "https://app.example/done" {
			t.Fatalf("the confirmation answered %d Location %q: %s", r.Status, r.Header.Get("Location"), r.Body)
		}
		harness.Expect(t, e.AddThreepid(t, u, sid, "sec"), 200, "")
	})
}

// TestNextLink: once the person confirmed, the e-mail link answers 302 to
// next_link; a next_link that is not http(s) is refused. With
// email.next_link_domains_allowed (Synapse's next_link_domain_whitelist),
// only the hosts it lists are accepted, at requestToken, and again before
// the redirect; an empty list accepts none.
func TestNextLink(t *testing.T) {
	request := func(e *harness.Env, address, nextLink string) harness.Response {
		return e.Do("POST", requestTokenPath, "", map[string]any{
			"client_secret": "x", "email": address, "send_attempt": 1, "next_link": nextLink})
	}
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		t.Run("any host", func(t *testing.T) {
			e := harness.Start(t, b, harness.Options{})
			harness.Expect(t, request(e, "dave@example.org", "javascript:alert(1)"), 400, "M_INVALID_PARAM")
			harness.Expect(t, request(e, "dave@example.org", "https://anywhere.example/done"), 200, "")
			r := harness.OpenLink(t, e.SMTP.WaitMail(t, "dave@example.org", 10*time.Second).FirstLink())
			if r.Status != http.StatusFound || r.Header.Get("Location") != "https://anywhere.example/done" {
				t.Fatalf("got %d Location %q", r.Status, r.Header.Get("Location"))
			}
		})
		t.Run("allowed hosts", func(t *testing.T) {
			e := harness.Start(t, b, harness.Options{EmailYAML: "next_link_domains_allowed: [app.example, 192.0.2.1]"})
			for _, link := range []string{"https://evil.example/done", "https://sub.app.example/", "https://app.example.evil.example/",
				"https://app.example@evil.example/", "https://evil.example/?https://app.example/"} {
				r := request(e, "erin@example.org", link)
				harness.Expect(t, r, 400, "M_INVALID_PARAM")
			}
			for i, link := range []string{"https://APP.example:8443/done?x=1", "http://192.0.2.1/"} {
				address := fmt.Sprintf("erin%d@example.org", i)
				harness.Expect(t, request(e, address, link), 200, "")
				r := harness.OpenLink(t, e.SMTP.WaitMail(t, address, 10*time.Second).FirstLink())
				if r.Status != http.StatusFound || r.Header.Get("Location") != link {
					t.Fatalf("%s: got %d Location %q", link, r.Status, r.Header.Get("Location"))
				}
			}
			// A session asked for before the list changed redirects nowhere
			// once the list no longer allows its next_link.
			harness.Expect(t, request(e, "later@example.org", "https://app.example/later"), 200, "")
			link := e.SMTP.WaitMail(t, "later@example.org", 10*time.Second).FirstLink()
			e.EditConfig("next_link_domains_allowed: [app.example, 192.0.2.1]", "next_link_domains_allowed: [other.example]")
			e.Restart()
			if r := harness.OpenLink(t, link); r.Status != 200 || !strings.Contains(string(r.Body), "confirmed") {
				t.Fatalf("a next_link no longer allowed: %d %v %s", r.Status, r.Header, r.Body)
			}
		})
		t.Run("no host", func(t *testing.T) {
			e := harness.Start(t, b, harness.Options{EmailYAML: "next_link_domains_allowed: []"})
			harness.Expect(t, request(e, "frank@example.org", "https://app.example/"), 400, "M_INVALID_PARAM")
			harness.Expect(t, e.Do("POST", requestTokenPath, "", map[string]any{"client_secret": "x", "email": "frank@example.org", "send_attempt": 1}), 200, "")
		})
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
			harness.Expect(t, harness.OpenLink(t, m), 200, "")
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

// TestRequestTokenInput: every field of both requestToken bodies, under v3
// and r0. Refused requests send nothing.
func TestRequestTokenInput(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		emailBase := map[string]any{"client_secret": "input", "email": "input@example.org", "send_attempt": 1}
		msisdnBase := map[string]any{"client_secret": "input", "country": "GB", "phone_number": "07700900123", "send_attempt": 1}
		common := func(base map[string]any) []probe {
			ps := append([]probe{}, nonObjects...)
			ps = append(ps, fieldProbes(base, "client_secret", badStrings)...)
			ps = append(ps, fieldProbes(base, "send_attempt", badInts)...)
			for _, s := range badSecrets {
				ps = append(ps, probe{"client_secret " + s.name, withField(base, "client_secret", s.value), 400, "M_INVALID_PARAM"})
			}
			for _, v := range []struct{ name, value string }{
				{"javascript", "javascript:alert(1)"},
				{"data", "data:text/html,<script>alert(1)</script>"},
				{"file", "file:///etc/passwd"},
				{"relative", "/done"},
				{"scheme-relative", "//evil.example/done"},
				{"no host", "https://"},
				{"not a URL", "http://a b"},
				{"too long", "https://app.example/" + strings.Repeat("a", 2100)},
			} {
				ps = append(ps, probe{"next_link " + v.name, withField(base, "next_link", v.value), 400, "M_INVALID_PARAM"})
			}
			for _, bt := range badStrings {
				ps = append(ps, probe{"next_link " + bt.name, withField(base, "next_link", bt.value), 400, "M_BAD_JSON"})
			}
			return ps
		}
		emailProbes := append(common(emailBase), fieldProbes(emailBase, "email", badStrings)...)
		for _, v := range []struct{ name, value string }{
			{"empty", ""}, {"blank", "   "}, {"no @", "input.example.org"}, {"two @", "a@b@example.org"},
			{"only @", "@"}, {"too short", "a@"}, {"too long", strings.Repeat("a", 490) + "@example.org"},
		} {
			emailProbes = append(emailProbes, probe{"email " + v.name, withField(emailBase, "email", v.value), 400, "M_INVALID_PARAM"})
		}
		msisdnProbes := append(common(msisdnBase), fieldProbes(msisdnBase, "country", badStrings)...)
		msisdnProbes = append(msisdnProbes, fieldProbes(msisdnBase, "phone_number", badStrings)...)
		for _, v := range []struct{ name, value string }{
			{"lower case", "gb"}, {"one letter", "G"}, {"three letters", "GBR"}, {"digits", "44"}, {"empty", ""}, {"unknown region", "ZZ"},
		} {
			msisdnProbes = append(msisdnProbes, probe{"country " + v.name, withField(msisdnBase, "country", v.value), 400, "M_INVALID_PARAM"})
		}
		for _, v := range []struct{ name, value string }{
			{"empty", ""}, {"letters", "call me"}, {"plus only", "+"}, {"one digit", "7"}, {"huge", strings.Repeat("7", 300)},
		} {
			msisdnProbes = append(msisdnProbes, probe{"phone_number " + v.name, withField(msisdnBase, "phone_number", v.value), 400, "M_INVALID_PARAM"})
		}
		for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
			t.Run(prefix, func(t *testing.T) {
				t.Run("email", func(t *testing.T) { runProbes(t, e, prefix+"/account/3pid/email/requestToken", "", emailProbes) })
				t.Run("msisdn", func(t *testing.T) { runProbes(t, e, prefix+"/account/3pid/msisdn/requestToken", "", msisdnProbes) })
			})
		}
		if n := len(e.SMTP.Mails()); n != 0 {
			t.Fatalf("refused requests sent %d mails", n)
		}
		if n := len(e.SMS.Messages()); n != 0 {
			t.Fatalf("refused requests sent %d SMS", n)
		}

		// The edges of what is accepted.
		allSecretChars := "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.=_-"
		t.Run("accepted", func(t *testing.T) {
			runProbes(t, e, "/_matrix/client/v3/account/3pid/email/requestToken", "", []probe{
				{"255-char secret", withField(emailBase, "client_secret", strings.Repeat("s", 255)), 200, ""},
				{"every secret character", withField(emailBase, "client_secret", allSecretChars), 200, ""},
				{"send_attempt 0", withField(emailBase, "send_attempt", 0), 200, ""},
				{"send_attempt negative", withField(emailBase, "send_attempt", -1), 200, ""},
				{"send_attempt max int64", withField(emailBase, "send_attempt", json.RawMessage("9223372036854775807")), 200, ""},
				{"next_link upper-case scheme", withField(emailBase, "next_link", "HTTPS://App.example/done?x=1#y"), 200, ""},
				{"next_link null", withField(emailBase, "next_link", nil), 200, ""},
				{"next_link empty", withField(emailBase, "next_link", ""), 200, ""},
				{"unknown fields", withField(emailBase, "id_server", "id.example"), 200, ""},
			})
			runProbes(t, e, "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", []probe{
				{"international number, other country", withField(withField(msisdnBase, "country", "US"), "phone_number", "+44 7700 900123"), 200, ""},
				{"punctuation", withField(msisdnBase, "phone_number", "(07700) 900-123"), 200, ""},
				{"Arabic-Indic digits", withField(msisdnBase, "phone_number", "٠٧٧٠٠٩٠٠١٢٣"), 200, ""},
			})
		})
	})
}

// TestEmailAddresses: odd e-mail addresses. Synapse's canonical form
// (trimmed, local part case-folded, domain lower-cased) is what is validated;
// an address that is not a bare addr-spec mail can be sent to (a display
// name, spaces, an empty domain) is the client's mistake, 400
// M_INVALID_PARAM, never a 502 "try again later", and sends nothing.
func TestEmailAddresses(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		const path = "/_matrix/client/v3/account/3pid/email/requestToken"
		for i, c := range []struct {
			name, email, mailedTo string // mailedTo "" when refused
		}{
			{"surrounding space", "  Trim@Example.ORG\t", "trim@example.org"},
			{"unicode", "Ünïcödé@Exämple.org", "ünïcödé@exämple.org"},
			{"sharp s folds", "Straße@example.org", "strasse@example.org"},
			{"shortest", "a@b", "a@b"},
			{"domain literal", "lit@[192.0.2.1]", "lit@[192.0.2.1]"},
			{"space inside", "a b@example.org", ""},
			{"CRLF inside", "a\r\nb@example.org", ""},
			{"display name", "Name <named@example.org>", ""},
			{"angle brackets", "<angle@example.org>", ""},
			{"comment", "a(comment)@example.org", ""},
			{"empty domain", "ab@", ""},
			{"double dot", "a..b@example.org", ""},
			{"header injection", "a\r\nBcc: evil@example.org", ""},
		} {
			t.Run(c.name, func(t *testing.T) {
				before := len(e.SMTP.Mails())
				r := e.Do("POST", path, "", map[string]any{"client_secret": "odd", "email": c.email, "send_attempt": i + 1})
				if c.mailedTo == "" {
					expectAnswer(t, r, 400, "M_INVALID_PARAM")
					if n := len(e.SMTP.Mails()); n != before {
						t.Fatalf("a refused address got %d mails", n-before)
					}
					return
				}
				expectAnswer(t, r, 200, "")
				e.SMTP.WaitMail(t, c.mailedTo, 10*time.Second)
			})
		}
	})
}

// TestMediumNotSupported: a medium that is not configured.
func TestMediumNotSupported(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{NoMSISDN: true, NoEmail: true})
		r := e.Do("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", map[string]any{"client_secret": "x", "country": "GB", "phone_number": "07700900001", "send_attempt": 1})
		harness.Expect(t, r, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
		r = e.Do("POST", "/_matrix/client/v3/account/3pid/email/requestToken", "", map[string]any{"client_secret": "x", "email": "a@example.org", "send_attempt": 1})
		harness.Expect(t, r, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
	})
}

// emailSession is a validation session started through requestToken.
type emailSession struct {
	sid, secret, token string
}

// startEmailSession requests a token for address and reads it from the mail.
func startEmailSession(t *testing.T, e *harness.Env, secret, address string) emailSession {
	t.Helper()
	before := len(e.SMTP.Mails())
	sid := e.RequestEmailToken(t, secret, address, 1)
	var link string
	deadline := time.Now().Add(10 * time.Second)
	for link == "" && time.Now().Before(deadline) {
		for _, m := range e.SMTP.Mails()[before:] {
			if u, err := url.Parse(m.FirstLink()); err == nil && u.Query().Get("sid") == sid {
				link = m.FirstLink()
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	u, err := url.Parse(link)
	if err != nil || link == "" {
		t.Fatalf("no mail for session %s", sid)
	}
	return emailSession{sid: sid, secret: secret, token: u.Query().Get("token")}
}

// submit posts the session's sid and secret with token to the e-mail submit_token.
func (s emailSession) submit(t *testing.T, e *harness.Env, token string) harness.Response {
	t.Helper()
	return e.Do("POST", emailSubmitPath, "", map[string]any{"sid": s.sid, "client_secret": s.secret, "token": token})
}

// addToken gives session sid a known token that expires at expires, as if
// it had been sent.
func addToken(t *testing.T, e *harness.Env, sid, token string, expires time.Time) {
	t.Helper()
	tok := storage.SessionToken{SID: sid, TokenHash: threepid.HashToken(token), SendAttempt: 9, ExpiresAt: expires.UnixMilli()}
	if err := e.Server.Store.AddSessionToken(context.Background(), tok, account.MaxLiveTokens); err != nil {
		t.Fatal(err)
	}
}

// expectSuccessFalse fails unless an error body carries "success": false (the
// spec's v1.18 submitToken errors).
func expectSuccessFalse(t *testing.T, r harness.Response) {
	t.Helper()
	if got, ok := r.JSON(t)["success"]; !ok || got != false {
		t.Fatalf("token error without \"success\": false: %s", r.Body)
	}
}

// TestSubmitToken: the submit_token endpoints with bad bodies, unknown and
// foreign sessions, wrong, expired and reused tokens; after five wrong tokens
// even the right one is refused.
func TestSubmitToken(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		u := e.NewUser("submitter")
		one := startEmailSession(t, e, "secret-one", "submit@example.org")
		two := startEmailSession(t, e, "secret-two", "submit@example.org")
		if one.sid == two.sid {
			t.Fatal("two client secrets share a session")
		}

		base := map[string]any{"sid": one.sid, "client_secret": one.secret, "token": "wrong"}
		probes := append([]probe{}, nonObjects...)
		for _, f := range []string{"sid", "client_secret", "token"} {
			probes = append(probes, fieldProbes(base, f, badStrings)...)
		}
		probes = append(probes,
			probe{"unknown sid", withField(base, "sid", "nosuchsession"), 400, "M_INVALID_PARAM"},
			probe{"empty sid", withField(base, "sid", ""), 400, "M_INVALID_PARAM"},
			probe{"huge sid", withField(base, "sid", strings.Repeat("s", 10000)), 400, "M_INVALID_PARAM"},
			// The right token under another client's secret: the same answer as
			// an unknown sid, and no attempt counted.
			probe{"secret of another session", map[string]any{"sid": one.sid, "client_secret": two.secret, "token": one.token}, 400, "M_INVALID_PARAM"},
			probe{"empty secret", withField(base, "client_secret", ""), 400, "M_INVALID_PARAM"},
		)
		t.Run("email", func(t *testing.T) { runProbes(t, e, emailSubmitPath, "", probes) })
		t.Run("e-mail session at the msisdn endpoint", func(t *testing.T) {
			r := e.Do("POST", msisdnSubmitPath, "", map[string]any{"sid": one.sid, "client_secret": one.secret, "token": one.token})
			expectAnswer(t, r, 400, "M_INVALID_PARAM")
		})
		t.Run("token of another session", func(t *testing.T) {
			r := one.submit(t, e, two.token)
			expectAnswer(t, r, 400, "M_TOKEN_INCORRECT")
			expectSuccessFalse(t, r)
		})
		t.Run("wrong secret does not use up attempts", func(t *testing.T) {
			for i := 0; i < 10; i++ {
				r := e.Do("POST", emailSubmitPath, "", map[string]any{"sid": one.sid, "client_secret": "guess" + strconv.Itoa(i), "token": "x"})
				expectAnswer(t, r, 400, "M_INVALID_PARAM")
			}
		})
		t.Run("right token, twice", func(t *testing.T) {
			for i := 0; i < 2; i++ {
				r := one.submit(t, e, " "+one.token+"\n")
				expectAnswer(t, r, 200, "")
				if r.JSON(t)["success"] != true {
					t.Fatalf("answer %s", r.Body)
				}
			}
		})
		t.Run("expired token", func(t *testing.T) {
			s := startEmailSession(t, e, "secret-expired", "expired@example.org")
			// Give the session a known token that expired a minute ago.
			addToken(t, e, s.sid, "known-token", time.Now().Add(-time.Minute))
			r := s.submit(t, e, "known-token")
			expectAnswer(t, r, 400, "M_SESSION_EXPIRED")
			expectSuccessFalse(t, r)
			r = harness.OpenLink(t, e.URL+emailSubmitPath+"?"+url.Values{"sid": {s.sid}, "client_secret": {s.secret}, "token": {"known-token"}}.Encode())
			if r.Status != 400 || !strings.Contains(string(r.Body), "expired") {
				t.Fatalf("the link of an expired token: %d %s", r.Status, r.Body)
			}
			// Not validated: /add refuses it.
			expectAnswer(t, e.AddThreepid(t, u, s.sid, s.secret), 400, "M_THREEPID_AUTH_FAILED")
		})
		t.Run("GET link", func(t *testing.T) {
			fresh := startEmailSession(t, e, "secret-fresh", "fresh@example.org")
			for _, c := range []struct {
				q      url.Values
				status int
			}{
				{url.Values{}, 400},
				{url.Values{"sid": {one.sid}}, 400},
				{url.Values{"sid": {"<script>"}, "client_secret": {"<b>"}, "token": {"x"}}, 400},
				{url.Values{"sid": {one.sid}, "client_secret": {one.secret}, "token": {"<script>alert(1)</script>"}}, 200},     // validated
				{url.Values{"sid": {fresh.sid}, "client_secret": {fresh.secret}, "token": {"<script>alert(1)</script>"}}, 200}, // the form
			} {
				r := harness.Do(t, "GET", e.URL+emailSubmitPath+"?"+c.q.Encode(), "", nil)
				if r.Status != c.status || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") ||
					!strings.Contains(r.Header.Get("Content-Security-Policy"), "default-src 'none'") || r.Header.Get("Referrer-Policy") != "no-referrer" ||
					strings.Contains(string(r.Body), "<script>") || strings.Contains(string(r.Body), "<b>") {
					t.Fatalf("GET ?%s: %d %v %s", c.q.Encode(), r.Status, r.Header, r.Body)
				}
			}
		})
		t.Run("reused after add", func(t *testing.T) {
			expectAnswer(t, e.AddThreepid(t, u, one.sid, one.secret), 200, "")
			expectAnswer(t, one.submit(t, e, one.token), 400, "M_INVALID_PARAM")
			r := harness.Do(t, "GET", e.URL+emailSubmitPath+"?"+url.Values{"sid": {one.sid}, "client_secret": {one.secret}, "token": {one.token}}.Encode(), "", nil)
			if r.Status != 400 {
				t.Fatalf("the link of a spent session: %d %s", r.Status, r.Body)
			}
			expectListed(t, e, u, "email:submit@example.org")
		})
		submit := e.URL + emailSubmitPath
		t.Run("five wrong tokens use the session up", func(t *testing.T) {
			sid := e.RequestEmailToken(t, "sec", "frank@example.org", 1)
			link, _ := url.Parse(e.SMTP.WaitMail(t, "frank@example.org", 10*time.Second).FirstLink())
			token := link.Query().Get("token")
			if len(token) < 22 {
				t.Fatalf("e-mail token %q carries fewer than 128 bits", token)
			}
			for i := 0; i < 5; i++ {
				harness.Expect(t, harness.Do(t, "POST", submit, "", map[string]any{"sid": sid, "client_secret": "sec", "token": "wrong"}), 400, "M_TOKEN_INCORRECT")
			}
			harness.Expect(t, harness.Do(t, "POST", submit, "", map[string]any{"sid": sid, "client_secret": "sec", "token": token}), 400, "M_TOKEN_INCORRECT")
			// A wrong client_secret learns nothing about the session.
			harness.Expect(t, harness.Do(t, "POST", submit, "", map[string]any{"sid": sid, "client_secret": "other", "token": token}), 400, "M_INVALID_PARAM")
		})
		t.Run("expired token of a first send_attempt", func(t *testing.T) {
			sid2 := e.RequestEmailToken(t, "sec2", "gina@example.org", 1)
			addToken(t, e, sid2, "known-token", time.Now().Add(-time.Minute))
			harness.Expect(t, harness.Do(t, "POST", submit, "", map[string]any{"sid": sid2, "client_secret": "sec2", "token": "known-token"}), 400, "M_SESSION_EXPIRED")
		})
	})
}

// TestAdd: /3pid/add with bad bodies (refused before user-interactive auth),
// and, after it, sessions that are unknown, foreign, unvalidated, spent (also
// once the 3PID was deleted again), stale or for a 3PID someone holds.
// Nothing is written on a refusal.
func TestAdd(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		alice, bob := e.NewUser("alice"), e.NewUser("bob")
		for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
			t.Run(prefix, func(t *testing.T) {
				base := map[string]any{"sid": "somesid", "client_secret": "somesecret"}
				probes := append([]probe{}, nonObjects...)
				probes = append(probes, fieldProbes(base, "sid", badStrings)...)
				probes = append(probes, fieldProbes(base, "client_secret", badStrings)...)
				for _, s := range badSecrets {
					probes = append(probes,
						probe{"client_secret " + s.name, withField(base, "client_secret", s.value), 400, "M_INVALID_PARAM"},
						probe{"sid " + s.name, withField(base, "sid", s.value), 400, "M_INVALID_PARAM"})
				}
				relays := len(e.HS.RelayCalls())
				runProbes(t, e, prefix+"/account/3pid/add", alice.Token, probes)
				if n := len(e.HS.RelayCalls()) - relays; n != 0 {
					t.Fatalf("bad bodies were relayed to the homeserver %d times", n)
				}
				expectAnswer(t, e.Do("POST", prefix+"/account/3pid/add", "", base), 401, "M_MISSING_TOKEN")
			})
		}

		t.Run("unknown sid", func(t *testing.T) {
			expectAnswer(t, e.AddThreepid(t, alice, "nosuchsession", "secret"), 400, "M_THREEPID_AUTH_FAILED")
		})
		t.Run("not validated", func(t *testing.T) {
			s := startEmailSession(t, e, "unvalidated", "unvalidated@example.org")
			expectAnswer(t, e.AddThreepid(t, alice, s.sid, s.secret), 400, "M_THREEPID_AUTH_FAILED")
		})
		t.Run("validated long ago", func(t *testing.T) {
			old := time.Now().Add(-25 * time.Hour).UnixMilli()
			err := e.Server.Store.CreateSession(context.Background(), storage.Session{
				SID: "stalesession", ClientSecret: "stale", Medium: "email", Address: "stale@example.org",
				SendAttempt: 1, ValidatedAt: old, ExpiresAt: old + 1, CreatedAt: old,
			}, storage.SessionToken{SID: "stalesession", TokenHash: threepid.HashToken("t"), SendAttempt: 1, ExpiresAt: old + 1, UsedAt: old})
			if err != nil {
				t.Fatal(err)
			}
			expectAnswer(t, e.AddThreepid(t, alice, "stalesession", "stale"), 400, "M_THREEPID_AUTH_FAILED")
		})
		s := startEmailSession(t, e, "alice-secret", "Shared@Example.org")
		expectAnswer(t, s.submit(t, e, s.token), 200, "")
		bobs := startEmailSession(t, e, "bob-secret", "shared@example.org")
		expectAnswer(t, bobs.submit(t, e, bobs.token), 200, "")
		again := startEmailSession(t, e, "alice-again", "shared@example.org")
		expectAnswer(t, again.submit(t, e, again.token), 200, "")
		t.Run("another client's secret", func(t *testing.T) {
			expectAnswer(t, e.AddThreepid(t, bob, s.sid, bobs.secret), 400, "M_THREEPID_AUTH_FAILED")
			expectAnswer(t, e.AddThreepid(t, bob, s.sid, "nottheone"), 400, "M_THREEPID_AUTH_FAILED")
			expectListed(t, e, bob)
		})
		t.Run("validated", func(t *testing.T) {
			expectAnswer(t, e.AddThreepid(t, alice, s.sid, s.secret), 200, "")
			expectListed(t, e, alice, "email:shared@example.org")
		})
		t.Run("twice", func(t *testing.T) {
			expectAnswer(t, e.AddThreepid(t, alice, s.sid, s.secret), 400, "M_THREEPID_AUTH_FAILED")
			expectListed(t, e, alice, "email:shared@example.org")
		})
		t.Run("already held, from a second session", func(t *testing.T) {
			// As Synapse's upsert: 200, and the 3PID is listed once.
			expectAnswer(t, e.AddThreepid(t, alice, again.sid, again.secret), 200, "")
			expectListed(t, e, alice, "email:shared@example.org")
			expectAnswer(t, e.AddThreepid(t, alice, again.sid, again.secret), 400, "M_THREEPID_AUTH_FAILED")
		})
		t.Run("held by another user", func(t *testing.T) {
			expectAnswer(t, e.AddThreepid(t, bob, bobs.sid, bobs.secret), 400, "M_THREEPID_IN_USE")
			expectListed(t, e, bob)
			expectListed(t, e, alice, "email:shared@example.org")
			r := e.Do("POST", "/_matrix/client/v3/account/3pid/email/requestToken", "", map[string]any{"client_secret": "late", "email": "SHARED@example.org", "send_attempt": 1})
			expectAnswer(t, r, 400, "M_THREEPID_IN_USE")
		})
		t.Run("replayed after a delete", func(t *testing.T) {
			u := e.NewUser("erin")
			sid := e.ValidateEmail(t, "sec", "erin@example.org")
			harness.Expect(t, e.AddThreepid(t, u, sid, "sec"), 200, "")
			harness.Expect(t, e.Do("POST", "/_matrix/client/v3/account/3pid/delete", u.Token, map[string]any{"medium": "email", "address": "erin@example.org"}), 200, "")
			harness.Expect(t, e.AddThreepid(t, u, sid, "sec"), 400, "M_THREEPID_AUTH_FAILED")
			if list := e.Threepids(t, u); len(list) != 0 {
				t.Fatalf("replayed session added %v", list)
			}
		})
	})
}

// TestUIARelay: no auth → the homeserver's 401 flows; a wrong password → the
// homeserver's 401 M_FORBIDDEN passed back; an unvalidated session after a
// right password → M_THREEPID_AUTH_FAILED; the caller keeps every device.
func TestUIARelay(t *testing.T) {
	for _, kind := range []string{"synapse", "dendrite"} {
		t.Run(kind, func(t *testing.T) {
			harness.Run(t, func(t *testing.T, b storagetest.Backend) {
				e := harness.Start(t, b, harness.Options{Kind: kind})
				u := e.NewUser("uia")
				other, _ := e.HS.Login(u.ID)
				_ = other
				devicesBefore := len(e.HS.Devices(u.ID))
				sid := e.RequestEmailToken(t, "sec", "uia@example.org", 1)
				r := e.Do("POST", "/_matrix/client/v3/account/3pid/add", u.Token, map[string]any{"sid": sid, "client_secret": "sec"})
				harness.Expect(t, r, 401, "")
				body := r.JSON(t)
				if body["flows"] == nil || body["session"] == nil {
					t.Fatalf("401 without flows/session: %s", r.Body)
				}
				bad := u.PasswordAuth(body["session"].(string))
				bad["password"] = "wrong"
				r = e.Do("POST", "/_matrix/client/v3/account/3pid/add", u.Token, map[string]any{"sid": sid, "client_secret": "sec", "auth": bad})
				harness.Expect(t, r, 401, "M_FORBIDDEN")
				// A thief with u's token and their own password gets nowhere.
				thief := e.NewUser("thief")
				r = e.Do("POST", "/_matrix/client/v3/account/3pid/add", u.Token, map[string]any{"sid": sid, "client_secret": "sec", "auth": thief.PasswordAuth(body["session"].(string))})
				if r.Status != 401 && r.Status != 403 {
					t.Fatalf("another user's password: %d %s", r.Status, r.Body)
				}
				r = e.Do("POST", "/_matrix/client/v3/account/3pid/add", u.Token, map[string]any{"sid": sid, "client_secret": "sec", "auth": u.PasswordAuth(body["session"].(string))})
				harness.Expect(t, r, 400, "M_THREEPID_AUTH_FAILED")
				if n := len(e.HS.Devices(u.ID)); n != devicesBefore {
					t.Fatalf("devices %d -> %d", devicesBefore, n)
				}
				if !e.HS.TokenValid(u.Token) {
					t.Fatal("the caller's token was revoked by the relay")
				}
				if n := e.HS.DeleteDevicesCalls(); n != 0 {
					t.Fatalf("delete_devices called %d times", n)
				}
			})
		})
	}
}

// TestValidationMail reads the validation mail as a mail client does (the
// headers, multipart/alternative, quoted-printable, UTF-8: the SMTP sink
// decodes it with net/mail and mime/multipart): the headers of an automated
// mailer, a subject naming the server, and a plain-text and an HTML part
// that both carry the server name, the address and the link.
func TestValidationMail(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		const address = "reader@example.org"
		sid := e.RequestEmailToken(t, "sec", address, 1)
		m := e.SMTP.WaitMail(t, address, 10*time.Second)
		msg, err := mail.ReadMessage(bytes.NewReader(m.Raw))
		if err != nil {
			t.Fatalf("parse the message: %v", err)
		}
		h := msg.Header
		if _, err := h.Date(); err != nil {
			t.Errorf("Date %q: %v", h.Get("Date"), err)
		}
		if id := h.Get("Message-Id"); !regexp.MustCompile(`^<[^<>@\s]+@` + regexp.QuoteMeta(harness.ServerName) + `>$`).MatchString(id) {
			t.Errorf("Message-ID %q is not on the server's domain %s", id, harness.ServerName)
		}
		if got := h.Get("Auto-Submitted"); got != "auto-generated" {
			t.Errorf("Auto-Submitted %q, want auto-generated", got)
		}
		if to, err := mail.ParseAddress(h.Get("To")); err != nil || to.Address != address {
			t.Errorf("To %q (%v)", h.Get("To"), err)
		}
		if !strings.Contains(m.Subject, harness.ServerName) {
			t.Errorf("Subject %q does not name the server", m.Subject)
		}
		if mediaType, _, err := mime.ParseMediaType(h.Get("Content-Type")); err != nil || mediaType != "multipart/alternative" {
			t.Fatalf("Content-Type %q (%v), want multipart/alternative", h.Get("Content-Type"), err)
		}
		link := m.FirstLink()
		if u, err := url.Parse(link); err != nil || u.Query().Get("sid") != sid {
			t.Fatalf("the plain-text link %q does not carry sid %s", link, sid)
		}
		for _, want := range []string{harness.ServerName, address, link} {
			if !strings.Contains(m.Text, want) {
				t.Errorf("the text part lacks %q:\n%s", want, m.Text)
			}
		}
		doc, err := html.Parse(strings.NewReader(m.HTML))
		if err != nil {
			t.Fatalf("parse the HTML part: %v", err)
		}
		var words strings.Builder
		hrefs := map[string]bool{}
		for n := range doc.Descendants() {
			switch {
			case n.Type == html.TextNode:
				words.WriteString(n.Data + " ")
			case n.Type == html.ElementNode && n.Data == "a":
				for _, a := range n.Attr {
					if a.Key == "href" {
						hrefs[a.Val] = true
					}
				}
			}
		}
		if !hrefs[link] {
			t.Errorf("the HTML part has no link to %s (links: %v):\n%s", link, hrefs, m.HTML)
		}
		for _, want := range []string{harness.ServerName, address} {
			if !strings.Contains(words.String(), want) {
				t.Errorf("the HTML part's text lacks %q:\n%s", want, m.HTML)
			}
		}
	})
}

// TestMailTemplates: the files of email.template_dir replace the built-in
// templates (one by one), and email.subject the subject.
func TestMailTemplates(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		dir := t.TempDir()
		text := "{{.ServerName}} asks: is {{.Address}} yours? {{.Link}} (for {{.ValidFor}})\n"
		if err := os.WriteFile(filepath.Join(dir, "validation.txt"), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		e := harness.Start(t, b, harness.Options{EmailYAML: fmt.Sprintf("template_dir: %q, subject: \"Welcome to {{.ServerName}}\", token_lifetime: 2h", dir)})
		sid := e.RequestEmailToken(t, "sec", "tpl@example.org", 1)
		m := e.SMTP.WaitMail(t, "tpl@example.org", 10*time.Second)
		want := "hs.test asks: is tpl@example.org yours? " + m.FirstLink() + " (for 2 hours)\n"
		if m.Subject != "Welcome to hs.test" || strings.ReplaceAll(m.Text, "\r\n", "\n") != want || !strings.Contains(m.FirstLink(), "sid="+sid) {
			t.Fatalf("mail: subject %q text %q, want %q", m.Subject, m.Text, want)
		}
		if !strings.Contains(m.HTML, "tpl@example.org") {
			t.Fatalf("the built-in HTML part is missing:\n%s", m.Raw)
		}
	})
}

// TestRequestTokenInhibit3pidErrors: with
// policy.request_token_inhibit_3pid_errors (Synapse's
// request_token_inhibit_3pid_errors), requestToken for an address an account
// holds answers as for a free one (a sid of the same form, the same fields),
// sends nothing, and the session it names behaves as one whose token went
// elsewhere. The policy still answers; without the option the address is in
// use.
func TestRequestTokenInhibit3pidErrors(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{ExtraYAML: "policy: {request_token_inhibit_3pid_errors: true, email_domains_denied: [denied.example]}\n"})
		holder := e.NewUser("holder")
		e.AddEmail(t, holder, "held@example.org")
		for _, c := range []struct{ held, free string }{{"held@example.org", "free@example.org"}, {"HELD@Example.org", "free2@example.org"}} {
			mails := len(e.SMTP.Mails())
			sid := e.RequestEmailToken(t, "probe", c.held, 1)
			free := e.RequestEmailToken(t, "probe", c.free, 1)
			if len(sid) != len(free) {
				t.Fatalf("sid %q of a held address, %q of a free one", sid, free)
			}
			e.SMTP.WaitMail(t, c.free, 10*time.Second)
			time.Sleep(100 * time.Millisecond)
			if n := len(e.SMTP.Mails()) - mails; n != 1 {
				t.Fatalf("%d mails, want 1 (to %s)", n, c.free)
			}
			if again := e.RequestEmailToken(t, "probe", c.held, 1); again != sid {
				t.Fatalf("a repeat gave sid %s, want %s", again, sid)
			}
			r := e.Do("POST", emailSubmitPath, "", map[string]any{"sid": sid, "client_secret": "probe", "token": "a guess"})
			expectAnswer(t, r, 400, "M_TOKEN_INCORRECT")
			expectAnswer(t, e.AddThreepid(t, e.NewUser("prober"+strconv.Itoa(mails)), sid, "probe"), 400, "M_THREEPID_AUTH_FAILED")
		}
		phone := map[string]any{"client_secret": "sec", "country": "GB", "phone_number": "07700900555", "send_attempt": 1}
		r := e.Do("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", phone)
		harness.Expect(t, r, 200, "")
		sms := e.SMS.WaitSMS(t, "447700900555", 10*time.Second)
		harness.Expect(t, harness.Do(t, "POST", r.JSON(t)["submit_url"].(string), "", map[string]any{
			"sid": r.JSON(t)["sid"], "client_secret": "sec", "token": sms.Token}), 200, "")
		harness.Expect(t, e.AddThreepid(t, holder, r.JSON(t)["sid"].(string), "sec"), 200, "")
		phone["client_secret"] = "probe"
		held := e.Do("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", phone)
		phone["phone_number"] = "07700900556"
		free := e.Do("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", phone)
		harness.Expect(t, held, 200, "")
		harness.Expect(t, free, 200, "")
		h, f := held.JSON(t), free.JSON(t)
		if len(h) != len(f) || h["success"] != true || h["submit_url"] != f["submit_url"] || h["msisdn"] != "447700900555" || h["sid"] == f["sid"] {
			t.Fatalf("answer %v for a held number, %v for a free one", h, f)
		}
		e.SMS.WaitSMS(t, "447700900556", 10*time.Second)
		if n := len(e.SMS.Messages()); n != 2 {
			t.Fatalf("%d SMS, want 2 (the holder's and the free number's)", n)
		}
		r = e.Do("POST", requestTokenPath, "", map[string]any{"client_secret": "x", "email": "a@denied.example", "send_attempt": 1})
		expectAnswer(t, r, 403, "M_THREEPID_DENIED")
	})
}
