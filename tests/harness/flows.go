package harness

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/support"
	"github.com/threepidd/threepidd/threepid"
)

// User is a user of the fake homeserver with a logged-in device.
type User struct {
	ID, Password, Token, DeviceID string
}

// NewUser registers localpart on the fake homeserver and logs it in.
func (e *Env) NewUser(localpart string) User {
	u := User{Password: "pw-" + localpart}
	u.ID = e.HS.AddUser(localpart, u.Password)
	u.Token, u.DeviceID = e.HS.Login(u.ID)
	return u
}

// PasswordAuth is the UIA auth dict for u's password in UIA session.
func (u User) PasswordAuth(session string) map[string]any {
	return map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": u.ID},
		"password":   u.Password,
		"session":    session,
	}
}

// RequestEmailToken asks for a validation e-mail and returns the sid.
func (e *Env) RequestEmailToken(t testing.TB, secret, email string, attempt int) string {
	t.Helper()
	r := e.Do("POST", "/_matrix/client/v3/account/3pid/email/requestToken", "", map[string]any{
		"client_secret": secret, "email": email, "send_attempt": attempt,
	})
	Expect(t, r, 200, "")
	sid, _ := r.JSON(t)["sid"].(string)
	if !threepid.ValidSID(sid) {
		t.Fatalf("requestToken returned an invalid sid %q", sid)
	}
	return sid
}

// ValidateEmail requests a token, reads the mail and opens its link as a
// person does (the page, then its button); it returns the sid of the
// validated session.
func (e *Env) ValidateEmail(t testing.TB, secret, email string) string {
	t.Helper()
	sid := e.RequestEmailToken(t, secret, email, 1)
	mail := e.SMTP.WaitMail(t, email, 10*time.Second)
	link := mail.FirstLink()
	u, err := url.Parse(link)
	if err != nil || u.Query().Get("sid") != sid {
		t.Fatalf("mail link %q does not carry sid %s", link, sid)
	}
	Expect(t, OpenLink(t, link), 200, "")
	return sid
}

// OpenLink opens a validation link as a person does in a browser: it loads
// the page and, when the page holds a form, presses its button. It returns
// the last answer: the form's, or the page's when it has none.
func OpenLink(t testing.TB, link string) Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	page, submitted, err := support.OpenLink(ctx, link)
	if err != nil {
		t.Fatal(err)
	}
	if submitted.Status == 0 {
		return page
	}
	return submitted
}

// AddThreepid runs /3pid/add through UIA: a first call without auth (401 with
// flows), then the password. It returns the final response.
func (e *Env) AddThreepid(t testing.TB, u User, sid, secret string) Response {
	t.Helper()
	r := e.Do("POST", "/_matrix/client/v3/account/3pid/add", u.Token, map[string]any{"sid": sid, "client_secret": secret})
	Expect(t, r, 401, "")
	session, _ := r.JSON(t)["session"].(string)
	if session == "" {
		t.Fatalf("401 without a UIA session: %s", r.Body)
	}
	return e.Do("POST", "/_matrix/client/v3/account/3pid/add", u.Token, map[string]any{
		"sid": sid, "client_secret": secret, "auth": u.PasswordAuth(session),
	})
}

// AddEmail validates email and adds it to u's account, failing on any error.
func (e *Env) AddEmail(t testing.TB, u User, email string) {
	t.Helper()
	secret := "secret-" + threepid.NewSID()[:8]
	sid := e.ValidateEmail(t, secret, email)
	Expect(t, e.AddThreepid(t, u, sid, secret), 200, "")
}

// Threepids lists u's 3PIDs through GET /account/3pid.
func (e *Env) Threepids(t testing.TB, u User) []map[string]any {
	t.Helper()
	r := e.Do("GET", "/_matrix/client/v3/account/3pid", u.Token, nil)
	Expect(t, r, 200, "")
	list, ok := r.JSON(t)["threepids"].([]any)
	if !ok {
		t.Fatalf("no threepids array: %s", r.Body)
	}
	out := make([]map[string]any, 0, len(list))
	for _, x := range list {
		out = append(out, x.(map[string]any))
	}
	return out
}

// Bind validates medium/address on fake identity server i and binds it to u
// through POST /3pid/bind; it returns the response.
func (e *Env) Bind(t testing.TB, u User, i int, medium, address string) Response {
	t.Helper()
	return e.BindOn(t, u, e.IS[i], medium, address)
}

// BindOn is Bind on any fake identity server, configured or one a client
// names (its id_server is its Name).
func (e *Env) BindOn(t testing.TB, u User, is *fakes.IdentityServer, medium, address string) Response {
	t.Helper()
	secret, idToken := "bind-"+threepid.NewSID()[:8], "idtok-"+threepid.NewSID()[:8]
	sid := is.AddValidatedSession(medium, address, secret, idToken)
	return e.Do("POST", "/_matrix/client/v3/account/3pid/bind", u.Token, map[string]any{
		"client_secret": secret, "id_server": is.Name(), "id_access_token": idToken, "sid": sid,
	})
}

// BindingsOf returns the identity servers u is recorded as bound on for address.
func (e *Env) BindingsOf(t testing.TB, u User, address string) []string {
	t.Helper()
	bs, err := e.Server.Store.BindingsOf(context.Background(), u.ID)
	if err != nil {
		t.Fatalf("load bindings: %v", err)
	}
	var out []string
	for _, b := range bs {
		if b.Address == address {
			out = append(out, b.IDServer)
		}
	}
	return out
}

// Notifications returns u's 3PID notification stream.
func (e *Env) Notifications(t testing.TB, u User) []storage.Notification {
	t.Helper()
	ns, err := e.Server.Store.NotificationsSince(context.Background(), u.ID, 0, 0, 1000)
	if err != nil {
		t.Fatalf("load notifications: %v", err)
	}
	return ns
}
