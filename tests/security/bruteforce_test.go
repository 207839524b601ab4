package security

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/account"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/harness"
)

const (
	emailSubmitPath  = "/_matrix/client/unstable/add_threepid/email/submit_token"
	msisdnSubmitPath = "/_matrix/client/unstable/add_threepid/msisdn/submit_token"
)

// session is a validation session of the test and its secret token.
type session struct {
	medium, address, secret, sid, token string
	submitPath                          string
}

// newSession requests a token for a fresh address of medium (n makes it
// unique) and reads it from the mail or SMS.
func newSession(t *testing.T, e *harness.Env, medium string, n int) session {
	t.Helper()
	s := session{medium: medium, secret: "secret-" + medium + string(rune('a'+n))}
	if medium == "email" {
		s.address = "victim" + string(rune('a'+n)) + "@example.org"
		s.submitPath = emailSubmitPath
		s.sid = e.RequestEmailToken(t, s.secret, s.address, 1)
		link, err := url.Parse(e.SMTP.WaitMail(t, s.address, 10*time.Second).FirstLink())
		if err != nil {
			t.Fatalf("mail link: %v", err)
		}
		s.token = link.Query().Get("token")
		return s
	}
	s.address = "4477009001" + string(rune('0'+n/10)) + string(rune('0'+n%10))
	s.submitPath = msisdnSubmitPath
	r := e.Do("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", map[string]any{
		"client_secret": s.secret, "country": "GB", "phone_number": "0" + s.address[2:], "send_attempt": 1,
	})
	harness.Expect(t, r, 200, "")
	s.sid, _ = r.JSON(t)["sid"].(string)
	s.token = e.SMS.WaitSMS(t, s.address, 10*time.Second).Token
	return s
}

// submit posts token for s and returns the answer.
func (s session) submit(t testing.TB, e *harness.Env, token string) harness.Response {
	return harness.Do(t, "POST", e.URL+s.submitPath, "", map[string]any{
		"sid": s.sid, "client_secret": s.secret, "token": token,
	})
}

// wrongToken is a token of the right shape that is not s's.
func (s session) wrongToken() string {
	if s.medium == "msisdn" {
		if s.token == "000000" {
			return "000001"
		}
		return "000000"
	}
	return base64.RawURLEncoding.EncodeToString(make([]byte, 32))
}

// errorText returns the error message of an answer.
func errorText(t testing.TB, r harness.Response) string {
	var m struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("not a Matrix error: %d %s", r.Status, r.Body)
	}
	return m.Error
}

// TestTokenGuessesLimited: after MaxTokenAttempts wrong tokens, the right one
// is refused too (the 6th attempt fails), and the session cannot be spent.
func TestTokenGuessesLimited(t *testing.T) {
	if account.MaxTokenAttempts != 5 {
		t.Fatalf("MaxTokenAttempts = %d; DESIGN.md allows at most 5", account.MaxTokenAttempts)
	}
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		u := e.NewUser("guesser")
		for i, medium := range []string{"email", "msisdn"} {
			t.Run(medium, func(t *testing.T) {
				s := newSession(t, e, medium, i)
				for n := 1; n <= account.MaxTokenAttempts; n++ {
					harness.Expect(t, s.submit(t, e, s.wrongToken()), 400, "M_TOKEN_INCORRECT")
				}
				harness.Expect(t, s.submit(t, e, s.token), 400, "M_TOKEN_INCORRECT")
				if medium == "email" { // the link too
					q := url.Values{"sid": {s.sid}, "client_secret": {s.secret}, "token": {s.token}}
					r := harness.Do(t, "GET", e.URL+emailSubmitPath+"?"+q.Encode(), "", nil)
					if r.Status != 400 {
						t.Fatalf("the link after %d wrong tokens answered %d", account.MaxTokenAttempts, r.Status)
					}
				}
				harness.Expect(t, e.AddThreepid(t, u, s.sid, s.secret), 400, "M_THREEPID_AUTH_FAILED")
			})
		}
	})
}

// TestConcurrentTokenGuessesLimited: guesses sent all at once are limited as
// well as guesses sent one after another: of a burst of wrong tokens, at most
// MaxTokenAttempts are checked; the others get the answer a locked session
// gives (learnt from a session locked one guess at a time).
func TestConcurrentTokenGuessesLimited(t *testing.T) {
	const burst = 40
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		for i, medium := range []string{"email", "msisdn"} {
			t.Run(medium, func(t *testing.T) {
				sequential := newSession(t, e, medium, 2*i)
				var wrong []string
				for range account.MaxTokenAttempts {
					wrong = append(wrong, errorText(t, sequential.submit(t, e, sequential.wrongToken())))
				}
				locked := errorText(t, sequential.submit(t, e, sequential.wrongToken()))
				if locked == wrong[0] {
					t.Fatalf("a locked session answers as an open one (%q): the burst cannot be told apart", locked)
				}

				s := newSession(t, e, medium, 2*i+1)
				start := make(chan struct{})
				answers := make([]harness.Response, burst)
				var wg sync.WaitGroup
				for n := range burst {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						answers[n] = s.submit(t, e, s.wrongToken())
					}()
				}
				close(start)
				wg.Wait()
				checked := 0
				for _, r := range answers {
					harness.Expect(t, r, 400, "M_TOKEN_INCORRECT")
					if errorText(t, r) != locked {
						checked++
					}
				}
				if checked > account.MaxTokenAttempts {
					t.Errorf("%d of %d concurrent guesses were checked, want at most %d", checked, burst, account.MaxTokenAttempts)
				}
				harness.Expect(t, s.submit(t, e, s.token), 400, "M_TOKEN_INCORRECT")
			})
		}
	})
}

// TestTokenEntropy: SMS codes have at least 6 digits, e-mail tokens at least
// 128 random bits; none repeats.
func TestTokenEntropy(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		digits := regexp.MustCompile(`^[0-9]{6,8}$`)
		seen := map[string]bool{}
		for n := range 10 {
			for _, medium := range []string{"email", "msisdn"} {
				s := newSession(t, e, medium, n)
				if seen[s.token] {
					t.Fatalf("token %q issued twice", s.token)
				}
				seen[s.token] = true
				if medium == "msisdn" {
					if !digits.MatchString(s.token) {
						t.Errorf("SMS code %q: want 6-8 digits", s.token)
					}
					continue
				}
				raw, err := base64.RawURLEncoding.DecodeString(s.token)
				if err != nil || len(raw) < 16 {
					t.Errorf("e-mail token %q: want at least 128 bits of URL-safe base64 (%d bytes, %v)", s.token, len(raw), err)
				}
			}
		}
	})
}
