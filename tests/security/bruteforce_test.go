package security

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
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
	} else {
		s.address = "4477009001" + string(rune('0'+n/10)) + string(rune('0'+n%10))
		s.submitPath = msisdnSubmitPath
	}
	s.request(t, e, 1)
	return s
}

// request asks e for a token of s's session with sendAttempt, reads it from
// the mail or SMS, and records the sid and the token in s.
func (s *session) request(t *testing.T, e *harness.Env, sendAttempt int) {
	t.Helper()
	if s.medium == "email" {
		s.sid = e.RequestEmailToken(t, s.secret, s.address, sendAttempt)
		link, err := url.Parse(e.SMTP.WaitMail(t, s.address, 10*time.Second).FirstLink())
		if err != nil {
			t.Fatalf("mail link: %v", err)
		}
		s.token = link.Query().Get("token")
		return
	}
	r := e.Do("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", map[string]any{
		"client_secret": s.secret, "country": "GB", "phone_number": "0" + s.address[2:], "send_attempt": sendAttempt,
	})
	harness.Expect(t, r, 200, "")
	s.sid, _ = r.JSON(t)["sid"].(string)
	s.token = e.SMS.WaitSMS(t, s.address, 10*time.Second).Token
}

// submit posts token for s and returns the answer.
func (s session) submit(t testing.TB, e *harness.Env, token string) harness.Response {
	return harness.Do(t, "POST", e.URL+s.submitPath, "", map[string]any{
		"sid": s.sid, "client_secret": s.secret, "token": token,
	})
}

// spendGuesses submits as many wrong tokens for s as its address may have
// within a token lifetime.
func (s session) spendGuesses(t *testing.T, e *harness.Env) {
	t.Helper()
	for range config.DefaultTokenAttemptsPerLifetime {
		harness.Expect(t, s.submit(t, e, s.wrongToken()), 400, "M_TOKEN_INCORRECT")
	}
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

// TestTokenGuessesLimited: after ratelimit.token_attempts_per_lifetime
// wrong tokens, the right one is refused too (the 6th attempt fails), and
// the session cannot be spent.
func TestTokenGuessesLimited(t *testing.T) {
	if config.DefaultTokenAttemptsPerLifetime != 5 {
		t.Fatalf("DefaultTokenAttemptsPerLifetime = %d; DESIGN.md allows at most 5", config.DefaultTokenAttemptsPerLifetime)
	}
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		u := e.NewUser("guesser")
		for i, medium := range []string{"email", "msisdn"} {
			t.Run(medium, func(t *testing.T) {
				s := newSession(t, e, medium, i)
				s.spendGuesses(t, e)
				harness.Expect(t, s.submit(t, e, s.token), 400, "M_TOKEN_INCORRECT")
				if medium == "email" { // the link too
					q := url.Values{"sid": {s.sid}, "client_secret": {s.secret}, "token": {s.token}}
					if r := harness.OpenLink(t, e.URL+emailSubmitPath+"?"+q.Encode()); r.Status != 400 {
						t.Fatalf("the link after %d wrong tokens answered %d", config.DefaultTokenAttemptsPerLifetime, r.Status)
					}
				}
				harness.Expect(t, e.AddThreepid(t, u, s.sid, s.secret), 400, "M_THREEPID_AUTH_FAILED")
			})
		}
	})
}

// TestTokenGuessesAcrossResends: wrong tokens are counted per 3PID, across
// the resends of its session and across its sessions. Once an address had
// its guesses, neither the token of a resend (a higher send_attempt) nor
// that of a new session under another client_secret is accepted for it.
func TestTokenGuessesAcrossResends(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		u := e.NewUser("resender")
		for i, medium := range []string{"email", "msisdn"} {
			t.Run(medium, func(t *testing.T) {
				s := newSession(t, e, medium, i)
				s.spendGuesses(t, e)
				s.request(t, e, 2)
				harness.Expect(t, s.submit(t, e, s.token), 400, "M_TOKEN_INCORRECT")
				other := s
				other.secret += "-other"
				other.request(t, e, 1)
				if other.sid == s.sid {
					t.Fatal("another client_secret got the same session")
				}
				harness.Expect(t, other.submit(t, e, other.token), 400, "M_TOKEN_INCORRECT")
				harness.Expect(t, e.AddThreepid(t, u, s.sid, s.secret), 400, "M_THREEPID_AUTH_FAILED")
				harness.Expect(t, e.AddThreepid(t, u, other.sid, other.secret), 400, "M_THREEPID_AUTH_FAILED")
			})
		}
	})
}

// TestLimitsSharedAcrossInstances: two threepidd instances on one database
// share the token attempts of a 3PID and the requestToken rate limits:
// guesses spread over both are limited as guesses at one, and a burst spent
// at one is spent at the other.
func TestLimitsSharedAcrossInstances(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		const limits = "{requesttoken_per_ip: {per_second: 0}, requesttoken_per_address: {per_second: 0.001, burst: 2}}"
		one := harness.Start(t, b, harness.Options{RateLimitYAML: limits})
		two := harness.Start(t, b, harness.Options{RateLimitYAML: limits})
		s := newSession(t, one, "msisdn", 0) // the address's first request, at one
		for n := range config.DefaultTokenAttemptsPerLifetime {
			at := []*harness.Env{one, two}[n%2]
			harness.Expect(t, s.submit(t, at, s.wrongToken()), 400, "M_TOKEN_INCORRECT")
		}
		harness.Expect(t, s.submit(t, two, s.token), 400, "M_TOKEN_INCORRECT")

		body := func(attempt int) map[string]any {
			return map[string]any{"client_secret": s.secret, "country": "GB", "phone_number": "0" + s.address[2:], "send_attempt": attempt}
		}
		const path = "/_matrix/client/v3/account/3pid/msisdn/requestToken"
		harness.Expect(t, two.Do("POST", path, "", body(2)), 200, "") // the burst's second
		harness.Expect(t, one.Do("POST", path, "", body(3)), 429, "M_LIMIT_EXCEEDED")
		harness.Expect(t, two.Do("POST", path, "", body(4)), 429, "M_LIMIT_EXCEEDED")
	})
}

// TestConcurrentTokenGuessesLimited: guesses sent all at once are limited as
// well as guesses sent one after another: of a burst of wrong tokens, at most
// ratelimit.token_attempts_per_lifetime are checked; the others get the
// answer a locked address gives (learnt from one locked a guess at a time).
func TestConcurrentTokenGuessesLimited(t *testing.T) {
	const burst = 40
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		for i, medium := range []string{"email", "msisdn"} {
			t.Run(medium, func(t *testing.T) {
				sequential := newSession(t, e, medium, 2*i)
				var wrong []string
				for range config.DefaultTokenAttemptsPerLifetime {
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
				if checked > config.DefaultTokenAttemptsPerLifetime {
					t.Errorf("%d of %d concurrent guesses were checked, want at most %d", checked, burst, config.DefaultTokenAttemptsPerLifetime)
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
