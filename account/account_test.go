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
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
)

// outbox records what would be sent.
type outbox struct {
	mu   sync.Mutex
	sent []string // the token of each message
	fail error
}

func (o *outbox) Send(_ context.Context, _, _, text string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fail != nil {
		return o.fail
	}
	i := strings.Index(text, "token=")
	if i < 0 {
		return errors.New("no link in the mail")
	}
	u, _ := url.Parse("http://x/?" + strings.Fields(text[i:])[0])
	o.sent = append(o.sent, u.Query().Get("token"))
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
		_, err = svc.SubmitToken(ctx, "email", r1.SID, "sec", mail.sent[0])
		wantErr(t, err, mxerr.TokenIncorrect) // replaced by the second
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
		*now = now.Add(account.ValidatedSessionLifetime + time.Minute)
		wantErr(t, svc.Add(ctx, "@u:hs", r4.SID, "s4"), mxerr.ThreepidAuthFailed)
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
		*now = now.Add(account.EmailTokenLifetime + time.Second)
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
