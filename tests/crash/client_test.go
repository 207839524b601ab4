package crash

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/support"
)

// requestTimeout bounds every request of the workers: threepidd answers in
// milliseconds, and a dead one is noticed at once.
const requestTimeout = 20 * time.Second

// errNoAnswer marks a request that got no (complete) HTTP answer: the
// process died under it, so it may or may not have been applied.
var errNoAnswer = errors.New("no answer")

// user is a user of the fake homeserver with a logged-in device.
type user struct {
	ID, Password, Token string
}

// newUser registers localpart on the fake homeserver and logs it in.
func (f *fixture) newUser(localpart string) user {
	u := user{Password: "pw-" + localpart}
	u.ID = f.HS.AddUser(localpart, u.Password)
	u.Token, _ = f.HS.Login(u.ID)
	return u
}

// client talks to one run of threepidd.
type client struct {
	base string
	http *http.Client
	// observe, if set, is told of every request do sends and how it went.
	observe func(method, path string, began time.Time, a support.Response, err error)
}

// newClient returns a client with connections of its own (none left over
// from a killed process).
func newClient(base string) *client {
	return &client{base: base, http: &http.Client{
		Transport:     &http.Transport{MaxIdleConnsPerHost: 4},
		Timeout:       requestTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (c *client) close() { c.http.CloseIdleConnections() }

// do sends a request to path (relative to the base URL) with an optional
// token and JSON body. A transport failure or truncated answer wraps errNoAnswer.
func (c *client) do(ctx context.Context, method, path, token string, body any) (support.Response, error) {
	began := time.Now()
	a, err := support.Client{HTTP: c.http}.Do(ctx, method, c.base+path, token, body)
	if err != nil {
		err = fmt.Errorf("%w: %v", errNoAnswer, err)
	}
	if c.observe != nil {
		c.observe(method, path, began, a, err)
	}
	return a, err
}

// expect sends a request and requires the status.
func (c *client) expect(ctx context.Context, status int, method, path, token string, body any) (support.Response, error) {
	a, err := c.do(ctx, method, path, token, body)
	if err != nil {
		return a, err
	}
	if a.Status != status {
		return a, fmt.Errorf("%s %s: got %s, want %d", method, path, a, status)
	}
	return a, nil
}

// openLink opens the validation link at path as a person does: the page,
// then its button (a form POST of what the page's form holds), each
// observed. A failure to answer wraps errNoAnswer.
func (c *client) openLink(ctx context.Context, path string) error {
	page, err := c.expect(ctx, 200, "GET", path, "", nil)
	if err != nil {
		return err
	}
	f, err := support.FindForm(c.base+path, page.Body)
	if err != nil {
		return fmt.Errorf("link %s: %w: %s", path, err, page.Body)
	}
	began := time.Now()
	a, err := support.Client{HTTP: c.http}.Submit(ctx, f, c.base)
	if err != nil {
		err = fmt.Errorf("%w: %v", errNoAnswer, err)
	}
	if c.observe != nil {
		c.observe("POST", strings.TrimPrefix(f.Action, c.base), began, a, err)
	}
	if err == nil && a.Status != 200 {
		err = fmt.Errorf("link %s: the form answered %s, want 200", path, a)
	}
	return err
}

// randomSecret returns a fresh client_secret.
func randomSecret(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

const (
	threepidPath = "/_matrix/client/v3/account/3pid"
	addPath      = threepidPath + "/add"
	bindPath     = threepidPath + "/bind"
	unbindPath   = threepidPath + "/unbind"
	requestPath  = threepidPath + "/email/requestToken"
)

// addEmail runs the whole add flow for address: requestToken, the mail, its
// link, then /3pid/add through user-interactive auth. gotSID is called with
// the sid as soon as requestToken answers it. nil means the final /add
// answered 200.
func (c *client) addEmail(ctx context.Context, sink *fakes.SMTPSink, u user, address string, gotSID func(string)) error {
	secret := randomSecret("s")
	a, err := c.expect(ctx, 200, "POST", requestPath, "", map[string]any{
		"client_secret": secret, "email": address, "send_attempt": 1,
	})
	if err != nil {
		return err
	}
	var tok struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(a.Body, &tok); err != nil || tok.SID == "" {
		return fmt.Errorf("requestToken answered %s", a)
	}
	gotSID(tok.SID)
	link, err := waitLink(ctx, sink, address)
	if err != nil {
		return err
	}
	if err := c.openLink(ctx, link); err != nil {
		return err
	}
	body := map[string]any{"sid": tok.SID, "client_secret": secret}
	a, err = c.expect(ctx, 401, "POST", addPath, u.Token, body)
	if err != nil {
		return err
	}
	var uia struct {
		Session string `json:"session"`
	}
	if err := json.Unmarshal(a.Body, &uia); err != nil || uia.Session == "" {
		return fmt.Errorf("/add without auth answered %s", a)
	}
	body["auth"] = map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": u.ID},
		"password":   u.Password,
		"session":    uia.Session,
	}
	_, err = c.expect(ctx, 200, "POST", addPath, u.Token, body)
	return err
}

// waitLink returns the path and query of the validation link mailed to
// address (the mail is sent before requestToken answers; the wait covers the
// sink's bookkeeping). The link is followed on the current base URL.
func waitLink(ctx context.Context, sink *fakes.SMTPSink, address string) (string, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, m := range sink.Mails() {
			if len(m.To) == 1 && strings.EqualFold(m.To[0], address) {
				u, err := url.Parse(m.FirstLink())
				if err != nil || u.Query().Get("token") == "" {
					return "", fmt.Errorf("mail to %s has no validation link: %q", address, m.Text)
				}
				return u.RequestURI(), nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("no mail to %s", address)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// bind validates address on the identity server and binds it to u.
func (c *client) bind(ctx context.Context, is *fakes.IdentityServer, u user, address string) error {
	secret, idToken := randomSecret("b"), randomSecret("idtok")
	sid := is.AddValidatedSession("email", address, secret, idToken)
	_, err := c.expect(ctx, 200, "POST", bindPath, u.Token, map[string]any{
		"client_secret": secret, "id_server": is.Name(), "id_access_token": idToken, "sid": sid,
	})
	return err
}

// unbind unbinds address of u from the identity server and requires success.
func (c *client) unbind(ctx context.Context, u user, address string) error {
	a, err := c.expect(ctx, 200, "POST", unbindPath, u.Token, map[string]any{
		"medium": "email", "address": address, "id_server": isName,
	})
	if err != nil {
		return err
	}
	if !bytes.Contains(a.Body, []byte(`"success"`)) {
		return fmt.Errorf("unbind of %s answered %s", address, a)
	}
	return nil
}

// onUpdate sends a signed onupdate from the identity server.
func (c *client) onUpdate(ctx context.Context, is *fakes.IdentityServer, u onupdate.Body) error {
	err := onupdate.Send(ctx, c.http, is.Key(), is.Name(), serverName, c.base, u)
	var remote *mxerr.Remote
	if err != nil && !errors.As(err, &remote) {
		return fmt.Errorf("%w: %v", errNoAnswer, err)
	}
	return err
}

// threepids lists u's addresses through GET /account/3pid.
func (c *client) threepids(ctx context.Context, u user) (map[string]bool, error) {
	a, err := c.expect(ctx, 200, "GET", threepidPath, u.Token, nil)
	if err != nil {
		return nil, err
	}
	var list struct {
		Threepids []struct {
			Medium  string `json:"medium"`
			Address string `json:"address"`
		} `json:"threepids"`
	}
	if err := json.Unmarshal(a.Body, &list); err != nil {
		return nil, fmt.Errorf("GET /account/3pid answered %s", a)
	}
	out := make(map[string]bool, len(list.Threepids))
	for _, tp := range list.Threepids {
		out[tp.Medium+":"+tp.Address] = true
	}
	return out, nil
}
