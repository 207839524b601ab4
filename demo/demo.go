// Package demo is `threepidd demo`: threepidd on SQLite in a temporary
// directory, with in-process stand-ins for the homeserver (a Dendrite), an
// identity server and an SMTP server, and a walk through the whole story of
// a user's e-mail address with every request and answer printed; then the
// service stays up for curl until the context ends.
//
// The homeserver and identity-server stand-ins are small and written for the
// story; the test fakes in tests/fakes are thorough but need package testing,
// which stays out of the binary. What both need is shared without it: the
// SMTP sink (internal/mailsink) and the identity server's signed association,
// pubkey answer and bind request (internal/sydent).
package demo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/outbound"
	"github.com/threepidd/threepidd/server"
)

const (
	// ServerName is the demo homeserver's name.
	ServerName = "demo.localhost"
	// IdentityServerName is the demo identity server's name.
	IdentityServerName = "id.demo.localhost"
	// Email is the address the story adds.
	Email = "alice@example.org"
	// Token is the demo user's access token, for curl.
	Token = "demo-alice-token"
	// NewOwner is the user who takes the address over on the identity server.
	NewOwner = "@mallory:elsewhere.example"

	// storyTimeout bounds the story (every request of it is local).
	storyTimeout = time.Minute
	// syncTimeoutMS is the long-poll timeout of the story's /sync.
	syncTimeoutMS = 30000
)

// alice is the demo user.
var alice = user{localpart: "alice", password: "alice-password", token: Token, deviceID: "DEMODEVICE"}

// steps are the story's step titles, in order.
var steps = []string{
	"Alice asks threepidd for a validation e-mail (no access token needed)",
	"The mail arrives at the SMTP sink",
	"Alice opens the link in the mail: a page asks her to confirm (opening it validates nothing)",
	"Alice presses Confirm: the page's form posts the link's values, which validates the address",
	"Alice adds the address: user-interactive auth, relayed to the homeserver",
	"Alice adds it again, now with her password in that UIA session",
	"Alice lists her addresses",
	"Alice binds the address on the identity server, through threepidd",
	"Alice's client syncs (threepidd proxies /sync to the homeserver)",
	"Alice's client long-polls /sync; meanwhile someone else binds her address on the identity server, which tells threepidd (signed onupdate)",
}

// Options shape the demo.
type Options struct {
	// Listen is threepidd's address; "" means 127.0.0.1 with a free port.
	Listen string
	// Ready, when set, is called once the story is told, with the service's
	// URL, while it serves until ctx ends.
	Ready func(url string)
	// Stdin, when set, stops the demo too when a line (Enter) or the end of
	// input comes: under `go run`, which exits 1 after any Ctrl-C whatever
	// the program does, that is the way to end with status 0.
	Stdin io.Reader
}

// Run starts threepidd and the stand-ins, tells the story to out, then serves
// until ctx ends (Ctrl-C in the binary) and cleans up. It returns nil after a
// clean stop, an error when something failed.
func Run(ctx context.Context, out io.Writer, opts Options) error {
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	p := &printer{w: out}
	dir, err := os.MkdirTemp("", "threepidd-demo-")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)

	hs := newHomeserver(p, ServerName, alice)
	is, err := newIdentityServer(p, IdentityServerName)
	if err != nil {
		return err
	}
	sink, err := startSMTPSink()
	if err != nil {
		return err
	}
	defer sink.Close()
	hsURL, stopHS, err := serveHTTP(hs.handler())
	if err != nil {
		return fmt.Errorf("homeserver stand-in: %w", err)
	}
	defer stopHS()
	isURL, stopIS, err := serveHTTP(is.handler())
	if err != nil {
		return fmt.Errorf("identity server stand-in: %w", err)
	}
	defer stopIS()

	cfgPath, err := writeConfig(dir, opts.Listen, hsURL, isURL, sink.Addr().Port)
	if err != nil {
		return err
	}
	cfg, err := config.Load(cfgPath, nil)
	if err != nil {
		return err
	}
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	serveCtx, stopServe := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx) }()
	stop := func() error {
		err := srv.Shutdown()
		stopServe()
		return errors.Join(err, <-served)
	}
	base := "http://" + srv.Addr()

	p.printf("threepidd demo: threepidd in front of stand-ins for a homeserver, an identity server and an SMTP server\n\n")
	p.printf("  threepidd         %s  (SQLite in %s, config %s)\n", base, dir, cfgPath)
	p.printf("  homeserver        %s  (like Dendrite: server_name %s, user %s, password %q)\n", hsURL, ServerName, alice.userID(ServerName), alice.password)
	p.printf("  identity server   %s  (like Sydent: signs as %s)\n", isURL, IdentityServerName)
	p.printf("  SMTP sink         %s\n", sink.Addr())

	st := &story{p: p, base: base, hs: hs, is: is, sink: sink, idServer: strings.TrimPrefix(isURL, "http://"),
		client: outbound.NewClient(http.DefaultTransport, storyTimeout)}
	storyCtx, cancel := context.WithTimeout(ctx, storyTimeout)
	err = st.tell(storyCtx)
	cancel()
	switch {
	case err != nil && ctx.Err() != nil: // Ctrl-C during the story
		p.printf("\nthreepidd demo: stopping\n")
		return stop()
	case err != nil:
		return errors.Join(fmt.Errorf("demo story: %w", err), stop())
	}

	stopKeys := "Ctrl-C"
	if opts.Stdin != nil {
		stopKeys = "Enter or Ctrl-C"
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			_, _ = bufio.NewReader(opts.Stdin).ReadString('\n') // a line, the end of input or an error: stop
			cancel()
		}()
	}
	p.printf("\nthreepidd keeps running at %s; %s stops it. Try:\n\n", base, stopKeys)
	p.printf("  curl -s -H 'Authorization: Bearer %s' %s/_matrix/client/v3/account/3pid\n", Token, base)
	p.printf("  curl -s -H 'Authorization: Bearer %s' '%s/_matrix/client/v3/sync?timeout=0'\n\n", Token, base)
	if opts.Ready != nil {
		opts.Ready(base)
	}
	<-ctx.Done()
	p.printf("\nthreepidd demo: stopping\n")
	return stop()
}

// serveHTTP serves h on 127.0.0.1 (a free port) and returns its URL and a stop function.
func serveHTTP(h http.Handler) (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }() // returns once stop closes the server
	return "http://" + l.Addr().String(), func() { _ = srv.Close() }, nil
}

// writeConfig writes threepidd's configuration for the demo into dir and
// returns its path: the newcomer can read it as an example.
func writeConfig(dir, listen, hsURL, isURL string, smtpPort int) (string, error) {
	key, err := signingkey.Generate("")
	if err != nil {
		return "", fmt.Errorf("signing key: %w", err)
	}
	var kb bytes.Buffer
	if err := key.WriteSynapse(&kb); err != nil {
		return "", fmt.Errorf("signing key: %w", err)
	}
	keyPath := filepath.Join(dir, "signing.key")
	if err := os.WriteFile(keyPath, kb.Bytes(), 0o600); err != nil {
		return "", fmt.Errorf("write signing key: %w", err)
	}
	doc := map[string]any{
		"server_name":      ServerName,
		"listen":           listen,
		"signing_key_path": keyPath,
		"database":         map[string]any{"driver": config.DriverSQLite, "dsn": filepath.Join(dir, "threepidd.db")},
		"homeserver":       map[string]any{"url": hsURL, "kind": config.KindDendrite},
		"email":            map[string]any{"smtp_host": "127.0.0.1", "smtp_port": smtpPort, "from": "threepidd@" + ServerName},
		"identity_servers": []map[string]any{{
			"server_name": strings.TrimPrefix(isURL, "http://"), "signing_name": IdentityServerName,
			"base_url": isURL, "onupdate": true,
		}},
	}
	data, err := yaml.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("encode config: %w", err)
	}
	path := filepath.Join(dir, "threepidd.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	return path, nil
}

// story is the walk through, as Alice's client and the peers make it.
type story struct {
	p        *printer
	client   *http.Client
	base     string
	hs       *homeserver
	is       *identityServer
	sink     *smtpSink
	idServer string // the identity server as clients name it (host:port)
	n        int
}

// next starts the next step.
func (s *story) next() {
	s.p.step(s.n+1, steps[s.n])
	s.n++
}

// call makes one request of the story and checks its status.
func (s *story) call(ctx context.Context, req request, want int) (exchange, error) {
	ex, err := s.p.do(ctx, s.client, req)
	if err != nil {
		return ex, err
	}
	if ex.Status != want {
		return ex, fmt.Errorf("%s %s answered %d, want %d: %s", req.method, req.url, ex.Status, want, ex.Body)
	}
	return ex, nil
}

// field decodes one string field of a JSON answer.
func field(ex exchange, name string) (string, error) {
	var m map[string]any
	if err := json.Unmarshal(ex.Body, &m); err != nil {
		return "", fmt.Errorf("decode answer: %w", err)
	}
	v, _ := m[name].(string)
	if v == "" {
		return "", fmt.Errorf("answer has no %q: %s", name, ex.Body)
	}
	return v, nil
}

func (s *story) tell(ctx context.Context) error {
	const clientSecret = "demo-client-secret"
	client := s.base + "/_matrix/client/v3"

	s.next()
	ex, err := s.call(ctx, request{method: http.MethodPost, url: client + "/account/3pid/email/requestToken",
		body: map[string]any{"client_secret": clientSecret, "email": Email, "send_attempt": 1}}, http.StatusOK)
	if err != nil {
		return err
	}
	sid, err := field(ex, "sid")
	if err != nil {
		return err
	}

	s.next()
	mail, err := s.sink.next(ctx)
	if err != nil {
		return err
	}
	s.p.printf("   To: %s\n   Subject: %s\n   Link: %s\n", strings.Join(mail.To, ", "), mail.Subject, mail.FirstLink())

	s.next()
	link, err := url.Parse(mail.FirstLink())
	if err != nil {
		return fmt.Errorf("mail link: %w", err)
	}
	if _, err := s.call(ctx, request{method: http.MethodGet, url: link.String()}, http.StatusOK); err != nil {
		return err
	}

	s.next()
	form := link.Query()
	link.RawQuery = ""
	if _, err := s.call(ctx, request{method: http.MethodPost, url: link.String(), form: form}, http.StatusOK); err != nil {
		return err
	}

	s.next()
	add := map[string]any{"sid": sid, "client_secret": clientSecret}
	if ex, err = s.call(ctx, request{method: http.MethodPost, url: client + "/account/3pid/add", token: Token, body: add}, http.StatusUnauthorized); err != nil {
		return err
	}
	session, err := field(ex, "session")
	if err != nil {
		return err
	}

	s.next()
	add["auth"] = map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": alice.localpart},
		"password": alice.password, "session": session,
	}
	if _, err := s.call(ctx, request{method: http.MethodPost, url: client + "/account/3pid/add", token: Token, body: add}, http.StatusOK); err != nil {
		return err
	}

	s.next()
	if _, err := s.call(ctx, request{method: http.MethodGet, url: client + "/account/3pid", token: Token}, http.StatusOK); err != nil {
		return err
	}

	s.next()
	const idToken = "demo-identity-server-token"
	isSID := s.is.addSession(isSession{medium: "email", address: Email, clientSecret: "demo-is-secret", accessToken: idToken})
	s.p.note("identity server", "Alice validated %s here too (session %s)", Email, isSID)
	if _, err := s.call(ctx, request{method: http.MethodPost, url: client + "/account/3pid/bind", token: Token, body: map[string]any{
		"sid": isSID, "client_secret": "demo-is-secret", "id_server": s.idServer, "id_access_token": idToken,
	}}, http.StatusOK); err != nil {
		return err
	}

	s.next()
	if ex, err = s.call(ctx, request{method: http.MethodGet, url: client + "/sync?timeout=0", token: Token}, http.StatusOK); err != nil {
		return err
	}
	since, err := field(ex, "next_batch")
	if err != nil {
		return err
	}

	s.next()
	return s.takeover(ctx, client, since)
}

// takeover runs the last step: a long-polling /sync, woken by the onupdate.
func (s *story) takeover(ctx context.Context, client, since string) error {
	hr, err := s.p.send(ctx, request{method: http.MethodGet, token: Token,
		url: client + "/sync?timeout=" + strconv.Itoa(syncTimeoutMS) + "&since=" + url.QueryEscape(since)})
	if err != nil {
		return err
	}
	type result struct {
		ex  exchange
		err error
	}
	synced := make(chan result, 1)
	go func() {
		ex, err := roundTrip(s.client, hr)
		synced <- result{ex, err}
	}()
	select {
	case <-s.hs.longPolls: // threepidd is holding the sync, and so is the homeserver
	case r := <-synced:
		return fmt.Errorf("the long-poll returned (%d) before the onupdate: %v", r.ex.Status, r.err)
	case <-ctx.Done():
		return fmt.Errorf("wait for the long-poll: %w", ctx.Err())
	}
	s.p.note("identity server", "%s's homeserver bound %s to them here; telling threepidd:", NewOwner, Email)
	body, err := json.Marshal(onupdate.Body{Threepid: Email, Medium: "email", Deleted: false, MXID: NewOwner})
	if err != nil {
		return fmt.Errorf("encode onupdate: %w", err)
	}
	auth, err := federation.SignRequest(s.is.key, IdentityServerName, ServerName, federation.DestinationField, http.MethodPost, onupdate.Path, body)
	if err != nil {
		return err
	}
	if _, err := s.call(ctx, request{method: http.MethodPost, url: s.base + onupdate.Path,
		header: http.Header{"Authorization": {auth}}, body: body}, http.StatusOK); err != nil {
		return err
	}
	s.p.printf("   … and the long-poll returns at once, with the threepids section:\n")
	r := <-synced
	if r.err != nil {
		return r.err
	}
	s.p.answer(r.ex)
	if r.ex.Status != http.StatusOK {
		return fmt.Errorf("the long-poll answered %d: %s", r.ex.Status, r.ex.Body)
	}
	var answer struct {
		Threepids map[string]struct {
			MXID string `json:"mxid"`
		} `json:"threepids"`
	}
	if err := json.Unmarshal(r.ex.Body, &answer); err != nil {
		return fmt.Errorf("decode the sync answer: %w", err)
	}
	if answer.Threepids[Email].MXID != NewOwner {
		return fmt.Errorf("the sync answer has no takeover of %s by %s: %s", Email, NewOwner, r.ex.Body)
	}
	return nil
}
