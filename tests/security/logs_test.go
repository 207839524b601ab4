package security

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
)

// TestSecretsNeverLogged runs a full journey, with its error paths, and
// requires the logs to hold none of the secrets that went through threepidd:
// access tokens, the password (in the UIA auth), client secrets, the e-mail
// token, the SMS code, identity-server access tokens and the admin token.
func TestSecretsNeverLogged(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		logs := support.CaptureLogs(t)
		e := harness.Start(t, b, harness.Options{IdentityServers: 1, ExtraYAML: "admin_token: " + adminToken + "\n"})
		is := e.IS[0]
		u := e.NewUser("secretive")
		secrets := []string{u.Token, u.Password, adminToken}

		// E-mail: a wrong token, then the link; the add through UIA.
		emailSecret := "cs-" + randomWord(t)
		secrets = append(secrets, emailSecret)
		sid := e.RequestEmailToken(t, emailSecret, "secretive@example.org", 1)
		link, err := url.Parse(e.SMTP.WaitMail(t, "secretive@example.org", 10*time.Second).FirstLink())
		if err != nil {
			t.Fatal(err)
		}
		emailToken := link.Query().Get("token")
		secrets = append(secrets, emailToken)
		harness.Expect(t, e.Do("POST", emailSubmitPath, "", map[string]any{"sid": sid, "client_secret": emailSecret, "token": "wrong-" + emailToken[:8]}), 400, "M_TOKEN_INCORRECT")
		harness.Expect(t, harness.OpenLink(t, link.String()), 200, "")
		harness.Expect(t, e.AddThreepid(t, u, sid, emailSecret), 200, "")

		// SMS: the code, then the add.
		smsSecret := "cs-" + randomWord(t)
		secrets = append(secrets, smsSecret)
		r := e.Do("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", "", map[string]any{
			"client_secret": smsSecret, "country": "GB", "phone_number": "07700900777", "send_attempt": 1,
		})
		harness.Expect(t, r, 200, "")
		smsSID, _ := r.JSON(t)["sid"].(string)
		code := e.SMS.WaitSMS(t, "447700900777", 10*time.Second).Token
		secrets = append(secrets, code)
		harness.Expect(t, e.Do("POST", msisdnSubmitPath, "", map[string]any{"sid": smsSID, "client_secret": smsSecret, "token": code}), 200, "")
		harness.Expect(t, e.AddThreepid(t, u, smsSID, smsSecret), 200, "")

		// Delivery failure: the error is logged, the secret is not.
		e.SMTP.SetFail(true)
		failSecret := "cs-" + randomWord(t)
		secrets = append(secrets, failSecret)
		harness.Expect(t, e.Do("POST", "/_matrix/client/v3/account/3pid/email/requestToken", "", map[string]any{
			"client_secret": failSecret, "email": "bounce@example.org", "send_attempt": 1,
		}), 502, "M_UNKNOWN")
		e.SMTP.SetFail(false)

		// Binding: bind, unbind; a failing identity server (queued unbind).
		bindSecret, idToken := "cs-"+randomWord(t), "idtok-"+randomWord(t)
		secrets = append(secrets, bindSecret, idToken)
		bindSID := is.AddValidatedSession("email", "secretive@example.org", bindSecret, idToken)
		harness.Expect(t, e.Do("POST", threepidPath+"/bind", u.Token, map[string]any{
			"client_secret": bindSecret, "id_server": is.Name(), "id_access_token": idToken, "sid": bindSID,
		}), 200, "")
		is.SetMode(fakes.IdentityServerFail500)
		failSID := is.AddValidatedSession("email", "secretive@example.org", bindSecret, idToken)
		r = e.Do("POST", threepidPath+"/bind", u.Token, map[string]any{
			"client_secret": bindSecret, "id_server": is.Name(), "id_access_token": idToken, "sid": failSID,
		})
		if r.Status < 400 {
			t.Fatalf("bind with a failing identity server answered %d", r.Status)
		}
		harness.Expect(t, e.Do("POST", unbindPath, u.Token, map[string]any{"medium": "email", "address": "secretive@example.org", "id_server": is.Name()}), 200, "")
		is.SetMode(fakes.IdentityServerNormal)

		// onupdate, /sync, the admin API, a delete, a revoked token.
		if err := onupdate.Send(context.Background(), nil, is.Key(), is.Name(), harness.ServerName, e.URL,
			onupdate.Body{Threepid: "secretive@example.org", Deleted: true, MXID: u.ID}); err != nil {
			t.Fatalf("onupdate: %v", err)
		}
		harness.Expect(t, e.Do("GET", syncPath+"?timeout=0", u.Token, nil), 200, "")
		harness.Expect(t, e.Do("GET", "/_threepidd/admin/v1/users/"+url.PathEscape(u.ID)+"/threepids", adminToken, nil), 200, "")
		harness.Expect(t, e.Do("GET", "/_threepidd/admin/v1/users/"+url.PathEscape(u.ID)+"/threepids", adminToken+"x", nil), 403, "M_FORBIDDEN")
		harness.Expect(t, e.Do("POST", deletePath, u.Token, map[string]any{"medium": "msisdn", "address": "447700900777"}), 200, "")
		e.HS.RevokeToken(u.Token)
		time.Sleep(e.Config.Homeserver.TokenCacheTTL + 100*time.Millisecond) // let the cache forget it
		harness.Expect(t, e.Do("GET", threepidPath, u.Token, nil), 401, "M_UNKNOWN_TOKEN")
		e.Stop()

		out := logs.String()
		for _, want := range []string{"validation message not sent", "unbind queued for retry", "onupdate applied"} {
			if !regexp.MustCompile(regexp.QuoteMeta(want)).MatchString(out) {
				t.Errorf("the logs lack %q: the capture missed threepidd's output:\n%s", want, out)
			}
		}
		for _, s := range secrets {
			if regexp.MustCompile(`\b` + regexp.QuoteMeta(s) + `\b`).MatchString(out) {
				t.Errorf("the logs hold the secret %q:\n%s", s, out)
			}
		}
	})
}

// randomWord returns 24 random hex digits: a secret nothing else in the logs
// can contain by chance.
func randomWord(t *testing.T) string {
	t.Helper()
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
