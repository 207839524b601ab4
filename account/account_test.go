package account_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/account"
	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/delivery"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/threepid"
)

// outbox records what would be sent.
type outbox struct {
	mu   sync.Mutex
	sent []string // the token of each message
	fail error
}

func (o *outbox) Send(_ context.Context, m delivery.Message) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fail != nil {
		return o.fail
	}
	text := m.Text
	i := strings.Index(text, "token=")
	if i < 0 {
		return errors.New("no link in the mail")
	}
	u, _ := url.Parse("http://x/?" + strings.Fields(text[i:])[0])
	o.sent = append(o.sent, u.Query().Get("token"))
	return nil
}

// smsOutbox counts the SMS that would be sent.
type smsOutbox struct {
	mu   sync.Mutex
	sent int
}

func (o *smsOutbox) Send(context.Context, string, string, string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sent++
	return nil
}

func (o *outbox) last() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sent[len(o.sent)-1]
}

type denyAll struct{ policy.AllowAll }

func (denyAll) CheckUserThreepid(context.Context, policy.Change) (policy.Decision, error) {
	return policy.Decision{Rule: "test_rule", Reason: "no"}, nil
}

func wantErr(t *testing.T, err error, want *mxerr.Error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %s", err, want.ErrCode)
	}
}

func newService(t *testing.T, s storage.Store) (*account.Service, *outbox, *time.Time) {
	now := time.Now()
	mail := &outbox{}
	return &account.Service{Store: s, Email: mail, PublicBaseURL: "https://hs.example", Clock: func() time.Time { return now }}, mail, &now
}

func TestRequestTokenAndAdd(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		svc, mail, now := newService(t, s)
		req := account.TokenRequest{ClientSecret: "sec", Medium: "email", Address: "a@example.org", SendAttempt: 1}
		r1, err := svc.RequestToken(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		// The same attempt: same sid, nothing sent; a higher one: same sid, a new token.
		r2, err := svc.RequestToken(ctx, req)
		if err != nil || r2.SID != r1.SID || len(mail.sent) != 1 {
			t.Fatalf("repeat: %v %v, %d sent", r2, err, len(mail.sent))
		}
		req.SendAttempt = 2
		if r3, err := svc.RequestToken(ctx, req); err != nil || r3.SID != r1.SID || len(mail.sent) != 2 {
			t.Fatalf("higher attempt: %v %v, %d sent", r3, err, len(mail.sent))
		}
		if r1.SubmitURL != "" {
			t.Fatalf("e-mail sessions carry no submit_url: %q", r1.SubmitURL)
		}
		wantErr(t, svc.Add(ctx, "@u:hs", r1.SID, "sec"), mxerr.ThreepidAuthFailed) // not validated
		// The first token still works after the resend.
		if _, err := svc.SubmitToken(ctx, "email", r1.SID, "sec", mail.sent[0]); err != nil {
			t.Fatal(err)
		}
		// And so does the second, as a link opened again.
		if _, err := svc.SubmitToken(ctx, "email", r1.SID, "sec", mail.last()); err != nil {
			t.Fatal(err)
		}
		wantErr(t, svc.Add(ctx, "@u:hs", r1.SID, "other"), mxerr.ThreepidAuthFailed)
		if err := svc.Add(ctx, "@u:hs", r1.SID, "sec"); err != nil {
			t.Fatal(err)
		}
		wantErr(t, svc.Add(ctx, "@u:hs", r1.SID, "sec"), mxerr.ThreepidAuthFailed) // spent
		_, err = svc.RequestToken(ctx, account.TokenRequest{ClientSecret: "x", Medium: "email", Address: "a@example.org", SendAttempt: 1})
		wantErr(t, err, mxerr.ThreepidInUse)

		// A validated session is spendable for 24 hours.
		r4, _ := svc.RequestToken(ctx, account.TokenRequest{ClientSecret: "s4", Medium: "email", Address: "b@example.org", SendAttempt: 1})
		if _, err := svc.SubmitToken(ctx, "email", r4.SID, "s4", mail.last()); err != nil {
			t.Fatal(err)
		}
		*now = now.Add(config.DefaultValidatedSessionLifetime + time.Minute)
		wantErr(t, svc.Add(ctx, "@u:hs", r4.SID, "s4"), mxerr.ThreepidAuthFailed)
	})
}

// slowMailer delays every message, so that concurrent requests overlap.
type slowMailer struct{ *outbox }

func (m slowMailer) Send(ctx context.Context, msg delivery.Message) error {
	time.Sleep(20 * time.Millisecond)
	return m.outbox.Send(ctx, msg)
}

// TestRequestTokenConcurrent: identical requestTokens at once (as on two
// instances behind one load balancer) send one message and answer one sid;
// a higher send_attempt at once sends one more. Each service is its own
// instance on the shared store.
func TestRequestTokenConcurrent(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		mail := &outbox{}
		instances := make([]*account.Service, 2)
		for i := range instances {
			instances[i], _, _ = newService(t, s)
			instances[i].Email = slowMailer{mail}
		}
		for _, c := range []struct {
			attempt int64
			sent    int
		}{{1, 1}, {1, 1}, {2, 2}} {
			sids := make(chan string, 8)
			var wg sync.WaitGroup
			for i := range cap(sids) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r, err := instances[i%2].RequestToken(ctx, account.TokenRequest{ClientSecret: "sec", Medium: "email", Address: "c@example.org", SendAttempt: c.attempt})
					if err != nil {
						t.Errorf("attempt %d: %v", c.attempt, err)
					}
					sids <- r.SID
				}()
			}
			wg.Wait()
			close(sids)
			first := <-sids
			for sid := range sids {
				if sid != first {
					t.Fatalf("attempt %d: sids %s and %s", c.attempt, first, sid)
				}
			}
			mail.mu.Lock()
			sent := len(mail.sent)
			mail.mu.Unlock()
			if sent != c.sent {
				t.Fatalf("after attempt %d: %d messages sent, want %d", c.attempt, sent, c.sent)
			}
		}
	})
}

func TestSubmitToken(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		svc, mail, now := newService(t, s)
		r, err := svc.RequestToken(ctx, account.TokenRequest{ClientSecret: "sec", Medium: "email", Address: "c@example.org", SendAttempt: 1, NextLink: "https://app/next"})
		if err != nil {
			t.Fatal(err)
		}
		token := mail.last()
		cases := []struct {
			name                     string
			medium, sid, secret, tok string
			want                     *mxerr.Error
		}{
			{"unknown sid", "email", "nope", "sec", token, mxerr.InvalidParam},
			{"wrong secret", "email", r.SID, "bad", token, mxerr.InvalidParam},
			{"wrong medium", "msisdn", r.SID, "sec", token, mxerr.InvalidParam},
			{"wrong token", "email", r.SID, "sec", "x", mxerr.TokenIncorrect},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				_, err := svc.SubmitToken(ctx, c.medium, c.sid, c.secret, c.tok)
				wantErr(t, err, c.want)
			})
		}
		next, err := svc.SubmitToken(ctx, "email", r.SID, "sec", token)
		if err != nil || next != "https://app/next" {
			t.Fatalf("submit: %q %v", next, err)
		}

		r2, _ := svc.RequestToken(ctx, account.TokenRequest{ClientSecret: "sec", Medium: "email", Address: "d@example.org", SendAttempt: 1})
		*now = now.Add(config.DefaultEmailTokenLifetime + time.Second)
		_, err = svc.SubmitToken(ctx, "email", r2.SID, "sec", mail.last())
		wantErr(t, err, mxerr.SessionExpired)
	})
}

func TestPolicyAndLimits(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		svc, mail, _ := newService(t, s)
		svc.Policy = denyAll{}
		_, err := svc.RequestToken(ctx, account.TokenRequest{ClientSecret: "sec", Medium: "email", Address: "e@example.org", SendAttempt: 1})
		wantErr(t, err, mxerr.ThreepidDenied)
		if !strings.Contains(err.Error(), "test_rule") || len(mail.sent) != 0 {
			t.Fatalf("block %q, %d sent", err, len(mail.sent))
		}
		_, err = svc.Delete(ctx, "@u:hs", "email", "e@example.org", "")
		wantErr(t, err, mxerr.Forbidden)

		svc.Policy = nil
		svc.MaxThreepidsPerUser = 1
		for i, addr := range []string{"f@example.org", "g@example.org"} {
			r, err := svc.RequestToken(ctx, account.TokenRequest{ClientSecret: "sec", Medium: "email", Address: addr, SendAttempt: 1})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := svc.SubmitToken(ctx, "email", r.SID, "sec", mail.last()); err != nil {
				t.Fatal(err)
			}
			err = svc.Add(ctx, "@u:hs", r.SID, "sec")
			if i == 0 && err != nil {
				t.Fatal(err)
			}
			if i == 1 {
				wantErr(t, err, mxerr.ThreepidDenied)
			}
		}

		// A message that cannot be sent leaves no session behind to swallow the retry.
		mail.fail = errors.New("smtp down")
		req := account.TokenRequest{ClientSecret: "sec", Medium: "email", Address: "h@example.org", SendAttempt: 1}
		_, err = svc.RequestToken(ctx, req)
		wantErr(t, err, mxerr.Unavailable)
		mail.fail = nil
		if _, err := svc.RequestToken(ctx, req); err != nil || len(mail.sent) != 3 {
			t.Fatalf("retry after a failed send: %v, %d sent", err, len(mail.sent))
		}
		// No SMS sender: msisdn not supported.
		_, err = svc.RequestToken(ctx, account.TokenRequest{ClientSecret: "sec", Medium: "msisdn", Address: "447700900001", SendAttempt: 1})
		wantErr(t, err, mxerr.ThreepidMediumNotSupported)
	})
}

// TestLiveTokens: every token sent for a session works until it expires,
// the newest MaxLiveTokens of them.
func TestLiveTokens(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		svc, mail, now := newService(t, s)
		svc.Limits = account.Limits{AttemptsPerLifetime: 100, AttemptsPerDay: 100}
		req := account.TokenRequest{ClientSecret: "sec", Medium: "email", Address: "live@example.org"}
		var sid string
		for attempt := range account.MaxLiveTokens + 1 {
			req.SendAttempt = int64(attempt + 1)
			r, err := svc.RequestToken(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			sid = r.SID
			*now = now.Add(time.Minute)
		}
		_, err := svc.SubmitToken(ctx, "email", sid, "sec", mail.sent[0])
		wantErr(t, err, mxerr.TokenIncorrect) // the oldest of MaxLiveTokens+1
		// The second token expires first of the live ones: a minute after the
		// first would have.
		*now = now.Add(config.DefaultEmailTokenLifetime - time.Duration(account.MaxLiveTokens)*time.Minute + time.Second)
		_, err = svc.SubmitToken(ctx, "email", sid, "sec", mail.sent[1])
		wantErr(t, err, mxerr.SessionExpired)
		if _, err := svc.SubmitToken(ctx, "email", sid, "sec", mail.sent[2]); err != nil {
			t.Fatalf("a live token: %v", err)
		}
	})
}

// TestTokenAttempts: attempts are counted per 3PID, across resends and
// sessions: at most AttemptsPerLifetime within a token lifetime, and
// AttemptsPerDay within 24 hours; both windows slide.
func TestTokenAttempts(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		svc, mail, now := newService(t, s)
		svc.Limits = account.Limits{AttemptsPerLifetime: 2, AttemptsPerDay: 3}
		session := func(secret string, attempt int64) (string, string) {
			t.Helper()
			r, err := svc.RequestToken(ctx, account.TokenRequest{ClientSecret: secret, Medium: "email", Address: "guess@example.org", SendAttempt: attempt})
			if err != nil {
				t.Fatal(err)
			}
			return r.SID, mail.last()
		}
		tooMany := func(err error) {
			t.Helper()
			wantErr(t, err, mxerr.TokenIncorrect)
			if !strings.Contains(err.Error(), "Too many attempts") {
				t.Fatalf("%v: want the answer of a spent budget", err)
			}
		}
		sid, _ := session("one", 1)
		for range 2 {
			_, err := svc.SubmitToken(ctx, "email", sid, "one", "wrong")
			wantErr(t, err, mxerr.TokenIncorrect)
		}
		_, token := session("one", 2) // a resend
		_, err := svc.SubmitToken(ctx, "email", sid, "one", token)
		tooMany(err)
		other, otherToken := session("two", 1) // another session
		_, err = svc.SubmitToken(ctx, "email", other, "two", otherToken)
		tooMany(err)
		// Another address has a budget of its own.
		r, err := svc.RequestToken(ctx, account.TokenRequest{ClientSecret: "one", Medium: "email", Address: "else@example.org", SendAttempt: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.SubmitToken(ctx, "email", r.SID, "one", mail.last()); err != nil {
			t.Fatal(err)
		}
		// A token lifetime later the lifetime's budget is back, but the day
		// has one attempt left.
		*now = now.Add(config.DefaultEmailTokenLifetime + time.Second)
		sid3, token3 := session("three", 1)
		_, err = svc.SubmitToken(ctx, "email", sid3, "three", "wrong")
		wantErr(t, err, mxerr.TokenIncorrect)
		_, err = svc.SubmitToken(ctx, "email", sid3, "three", token3)
		tooMany(err)
		*now = now.Add(24*time.Hour - config.DefaultEmailTokenLifetime)
		sid4, token4 := session("four", 1)
		if _, err := svc.SubmitToken(ctx, "email", sid4, "four", token4); err != nil {
			t.Fatalf("a day later: %v", err)
		}
	})
}

// failingAttempts is a store whose attempt count cannot be reached.
type failingAttempts struct{ storage.Store }

func (failingAttempts) RecordTokenAttempt(context.Context, string, string, int64, ...storage.AttemptLimit) (bool, error) {
	return false, errors.New("connection refused")
}

// TestTokenAttemptsFailClosed: when attempts cannot be counted, no token is
// checked.
func TestTokenAttemptsFailClosed(t *testing.T) {
	ctx := context.Background()
	svc, mail, _ := newService(t, storagetest.SQLite(t))
	r, err := svc.RequestToken(ctx, account.TokenRequest{ClientSecret: "sec", Medium: "email", Address: "closed@example.org", SendAttempt: 1})
	if err != nil {
		t.Fatal(err)
	}
	svc.Store = failingAttempts{svc.Store}
	if _, err := svc.SubmitToken(ctx, "email", r.SID, "sec", mail.last()); err == nil || errors.Is(err, &mxerr.Error{}) {
		t.Fatalf("submit with attempts uncounted: %v, want a server error", err)
	}
	if l, err := svc.OpenLink(ctx, "email", r.SID, "sec"); err != nil || l.Validated {
		t.Fatalf("the session after an uncounted attempt: %+v %v", l, err)
	}
}

// TestInhibitThreepidErrors: with the option, an address an account holds
// gets an answer of the same shape as a free one, and a session that
// behaves as one whose token was sent elsewhere: same sid on a repeat, its
// token refused; nothing is sent. Policy and next_link rules still answer.
func TestInhibitThreepidErrors(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		svc, mail, _ := newService(t, s)
		sms := &smsOutbox{}
		svc.SMS = sms
		svc.InhibitThreepidErrors = true
		svc.NextLinkDomains = []string{"app.example"}
		for _, a := range []storage.Association{
			{UserID: "@holder:hs", Medium: "email", Address: "held@example.org"},
			{UserID: "@holder:hs", Medium: "msisdn", Address: "447700900001"},
		} {
			if err := s.InsertAssociation(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
		for _, medium := range []string{"email", "msisdn"} {
			held, free := "held@example.org", "free@example.org"
			if medium == "msisdn" {
				held, free = "447700900001", "447700900002"
			}
			got, err := svc.RequestToken(ctx, account.TokenRequest{ClientSecret: "sec", Medium: medium, Address: held, SendAttempt: 1})
			if err != nil {
				t.Fatal(err)
			}
			want, err := svc.RequestToken(ctx, account.TokenRequest{ClientSecret: "sec", Medium: medium, Address: free, SendAttempt: 1})
			if err != nil {
				t.Fatal(err)
			}
			if !threepid.ValidSID(got.SID) || len(got.SID) != len(want.SID) || got.SID == want.SID {
				t.Fatalf("%s: sid %q of a held address, %q of a free one", medium, got.SID, want.SID)
			}
			got.SID, want.SID = "", ""
			if medium == "msisdn" {
				want.MSISDN, want.IntlFmt = got.MSISDN, got.IntlFmt
			}
			if got != want {
				t.Fatalf("%s: answer %+v for a held address, %+v for a free one", medium, got, want)
			}
		}
		if len(mail.sent) != 1 || sms.sent != 1 {
			t.Fatalf("%d mails, %d SMS: want one of each (to the free addresses)", len(mail.sent), sms.sent)
		}
		req := account.TokenRequest{ClientSecret: "s2", Medium: "email", Address: "held@example.org", SendAttempt: 1}
		r1, _ := svc.RequestToken(ctx, req)
		if r2, err := svc.RequestToken(ctx, req); err != nil || r2.SID != r1.SID {
			t.Fatalf("repeat: %v %v, want sid %s", r2, err, r1.SID)
		}
		_, err := svc.SubmitToken(ctx, "email", r1.SID, "s2", "a guess")
		wantErr(t, err, mxerr.TokenIncorrect)
		if len(mail.sent) != 1 {
			t.Fatalf("%d mails", len(mail.sent))
		}
		// Held only in the homeserver's own table: the same quiet answer.
		svc.Holders = holderMap{"hsonly@example.org": "@other:hs"}
		hs := account.TokenRequest{ClientSecret: "s5", Medium: "email", Address: "hsonly@example.org", SendAttempt: 1}
		r3, err := svc.RequestToken(ctx, hs)
		if err != nil || !threepid.ValidSID(r3.SID) {
			t.Fatalf("held by the homeserver: %+v %v", r3, err)
		}
		if r4, err := svc.RequestToken(ctx, hs); err != nil || r4.SID != r3.SID {
			t.Fatalf("repeat, held by the homeserver: %+v %v, want sid %s", r4, err, r3.SID)
		}
		if len(mail.sent) != 1 {
			t.Fatalf("%d mails", len(mail.sent))
		}
		svc.Holders = nil
		// The rules before it still answer.
		req.NextLink = "https://elsewhere.example/"
		_, err = svc.RequestToken(ctx, req)
		wantErr(t, err, mxerr.InvalidParam)
		svc.Policy = denyAll{}
		_, err = svc.RequestToken(ctx, account.TokenRequest{ClientSecret: "s3", Medium: "email", Address: "held@example.org", SendAttempt: 1})
		wantErr(t, err, mxerr.ThreepidDenied)
		// Without the option, the address is in use.
		svc.Policy, svc.InhibitThreepidErrors = nil, false
		_, err = svc.RequestToken(ctx, account.TokenRequest{ClientSecret: "s4", Medium: "email", Address: "held@example.org", SendAttempt: 1})
		wantErr(t, err, mxerr.ThreepidInUse)
		svc.Holders = holderMap{"hsonly@example.org": "@other:hs"}
		_, err = svc.RequestToken(ctx, account.TokenRequest{ClientSecret: "s6", Medium: "email", Address: "hsonly@example.org", SendAttempt: 1})
		wantErr(t, err, mxerr.ThreepidInUse)
	})
}

// holderMap is the homeserver's own 3PID table: address to holder.
type holderMap map[string]string

func (h holderMap) ThreepidHolder(_ context.Context, _, address string) (string, error) {
	return h[address], nil
}

// TestNextLinkDomains: next_link_domains_allowed is checked at requestToken,
// and again before the redirect (the list may have changed since).
func TestNextLinkDomains(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		svc, mail, _ := newService(t, s)
		svc.NextLinkDomains = []string{"app.example"}
		req := account.TokenRequest{ClientSecret: "sec", Medium: "email", Address: "n@example.org", SendAttempt: 1, NextLink: "https://evil.example/"}
		_, err := svc.RequestToken(ctx, req)
		wantErr(t, err, mxerr.InvalidParam)
		req.NextLink = "https://APP.example:8443/done"
		r, err := svc.RequestToken(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if l, err := svc.OpenLink(ctx, "email", r.SID, "sec"); err != nil || l != (account.LinkSession{Medium: "email", Address: "n@example.org", NextLink: req.NextLink}) {
			t.Fatalf("OpenLink: %+v %v", l, err)
		}
		svc.NextLinkDomains = []string{}
		if l, err := svc.OpenLink(ctx, "email", r.SID, "sec"); err != nil || l.NextLink != "" {
			t.Fatalf("OpenLink after the list changed: %+v %v", l, err)
		}
		if next, err := svc.SubmitToken(ctx, "email", r.SID, "sec", mail.last()); err != nil || next != "" {
			t.Fatalf("submit after the list changed: %q %v, want no next_link", next, err)
		}
		if l, err := svc.OpenLink(ctx, "email", r.SID, "sec"); err != nil || !l.Validated {
			t.Fatalf("OpenLink after the submit: %+v %v", l, err)
		}
		_, err = svc.OpenLink(ctx, "email", r.SID, "other")
		wantErr(t, err, mxerr.InvalidParam)
	})
}
