package delivery

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/internal/mailsink"
)

// delivered is one message as the test SMTP server received it.
type delivered struct {
	from   string
	to     []string
	data   []byte
	mech   string // AUTH mechanism used, "" without AUTH
	user   string
	secure bool // STARTTLS was negotiated
}

// smtpServer is a small SMTP server on 127.0.0.1. With a user it offers
// mechs and refuses mail before a successful AUTH.
type smtpServer struct {
	addr     *net.TCPAddr
	mechs    []string
	user     string
	password string
	got      chan delivered
	// conns counts the connections the server accepted, logouts the
	// sessions that ended (QUIT or a dropped connection).
	conns, logouts atomic.Int32
}

// startSMTP starts a server; with tlsConf it offers STARTTLS.
func startSMTP(t *testing.T, tlsConf *tls.Config, mechs []string, user, password string) *smtpServer {
	return startSMTPIdle(t, tlsConf, mechs, user, password, 10*time.Second)
}

// startSMTPIdle starts a server that drops a client idle for readTimeout.
func startSMTPIdle(t *testing.T, tlsConf *tls.Config, mechs []string, user, password string, readTimeout time.Duration) *smtpServer {
	t.Helper()
	s := &smtpServer{mechs: mechs, user: user, password: password, got: make(chan delivered, 64)}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		s.conns.Add(1)
		return &smtpSession{srv: s, conn: c}, nil
	}))
	srv.Domain = "127.0.0.1"
	srv.AllowInsecureAuth = true // the client allows it only because the server is on localhost
	srv.TLSConfig = tlsConf
	srv.ReadTimeout = readTimeout
	srv.WriteTimeout = 10 * time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().(*net.TCPAddr)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = l.Close() // in case Serve had not registered it yet
		<-done
	})
	return s
}

func (s *smtpServer) email() config.Email {
	return config.Email{
		SMTPHost: "127.0.0.1",
		SMTPPort: s.addr.Port,
		From:     "Threepidd <noreply@example.org>",
	}
}

// next returns the next delivered message, failing the test if none comes.
func (s *smtpServer) next(t *testing.T) delivered {
	t.Helper()
	select {
	case d := <-s.got:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no message delivered")
		return delivered{}
	}
}

func (s *smtpServer) assertNothingDelivered(t *testing.T) {
	t.Helper()
	select {
	case d := <-s.got:
		t.Fatalf("a message was delivered: %+v", d)
	default:
	}
}

type smtpSession struct {
	srv  *smtpServer
	conn *smtp.Conn
	cur  delivered
}

func (s *smtpSession) AuthMechanisms() []string { return s.srv.mechs }

func (s *smtpSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, password string) error {
		if user != s.srv.user || password != s.srv.password {
			return errors.New("invalid credentials")
		}
		s.cur.mech, s.cur.user = mech, user
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, password string) error { return check(user, password) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.srv.user != "" && s.cur.user == "" {
		return smtp.ErrAuthRequired
	}
	s.cur.from = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.cur.to = append(s.cur.to, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	d := s.cur
	d.data = data
	_, d.secure = s.conn.TLSConnectionState()
	s.srv.got <- d
	return nil
}

func (s *smtpSession) Reset() { s.cur = delivered{mech: s.cur.mech, user: s.cur.user} }

func (s *smtpSession) Logout() error {
	s.srv.logouts.Add(1)
	return nil
}

// loginServer is the server side of AUTH LOGIN, which go-sasl lacks.
type loginServer struct {
	check    func(user, password string) error
	username *string
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch {
	case l.username == nil && response == nil:
		return []byte("Username:"), false, nil
	case l.username == nil:
		u := string(response)
		l.username = &u
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(*l.username, string(response))
	}
}

// selfSigned returns a server TLS config for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

// body decodes the message's text/plain body.
func body(t *testing.T, msg *mail.Message) string {
	t.Helper()
	if ct := msg.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type = %q, want text/plain", ct)
	}
	var r io.Reader = msg.Body
	switch cte := strings.ToLower(msg.Header.Get("Content-Transfer-Encoding")); cte {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "", "7bit", "8bit":
	default:
		t.Fatalf("unexpected Content-Transfer-Encoding %q", cte)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "\r\n", "\n")
}

func TestMailerSends(t *testing.T) {
	srv := startSMTP(t, nil, nil, "", "")
	const subject = "Bestätigen Sie Ihre E-Mail-Adresse"
	text := "Open this link to confirm:\n" +
		"https://matrix.example.org/_matrix/client/unstable/add_threepid/email/submit_token?token=abc&client_secret=s3cret&sid=x" +
		"\n\nGrüße, " + strings.Repeat("long line ", 20) + "\n"
	if err := NewMailer(srv.email(), "hs.test").Send(context.Background(), Message{To: "alice@example.com", Subject: subject, Text: text}); err != nil {
		t.Fatal(err)
	}
	d := srv.next(t)
	if d.from != "noreply@example.org" || len(d.to) != 1 || d.to[0] != "alice@example.com" {
		t.Fatalf("envelope from %q to %q, want noreply@example.org to alice@example.com", d.from, d.to)
	}
	if d.mech != "" {
		t.Errorf("authenticated with %s without a username", d.mech)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(d.data))
	if err != nil {
		t.Fatal(err)
	}
	from, err := mail.ParseAddress(msg.Header.Get("From"))
	if err != nil || from.Address != "noreply@example.org" || from.Name != "Threepidd" {
		t.Errorf("From: %q (%v)", msg.Header.Get("From"), err)
	}
	if to, err := mail.ParseAddress(msg.Header.Get("To")); err != nil || to.Address != "alice@example.com" {
		t.Errorf("To: %q (%v)", msg.Header.Get("To"), err)
	}
	if got, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil || got != subject {
		t.Errorf("Subject = %q (%v), want %q", got, err, subject)
	}
	if _, err := msg.Header.Date(); err != nil {
		t.Errorf("Date %q: %v", msg.Header.Get("Date"), err)
	}
	if id := msg.Header.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@hs.test>") || strings.Count(id, "@") != 1 {
		t.Errorf("Message-ID %q is not <...@hs.test>", id)
	}
	if got := msg.Header.Get("Auto-Submitted"); got != "auto-generated" {
		t.Errorf("Auto-Submitted %q", got)
	}
	if got := msg.Header.Get("X-Auto-Response-Suppress"); got != "All" {
		t.Errorf("X-Auto-Response-Suppress %q", got)
	}
	if got := body(t, msg); got != text {
		t.Errorf("body = %q\nwant %q", got, text)
	}
}

// TestMailerSendsAlternative: with HTML, the message is
// multipart/alternative: the plain text first, then the HTML.
func TestMailerSendsAlternative(t *testing.T) {
	srv := startSMTP(t, nil, nil, "", "")
	m := Message{To: "alice@example.com", Subject: "Hi", Text: "plain ✓\n", HTML: "<p>rich ✓</p>\n"}
	if err := NewMailer(srv.email(), "example.org:8448").Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	d := srv.next(t)
	msg, err := mail.ReadMessage(bytes.NewReader(d.data))
	if err != nil {
		t.Fatal(err)
	}
	if id := msg.Header.Get("Message-Id"); !strings.HasSuffix(id, "@example.org>") {
		t.Errorf("Message-ID %q is not on the host of the server name", id)
	}
	if mediaType, _, err := mime.ParseMediaType(msg.Header.Get("Content-Type")); err != nil || mediaType != "multipart/alternative" {
		t.Fatalf("Content-Type %q (%v)", msg.Header.Get("Content-Type"), err)
	}
	parsed, err := mailsink.Parse(d.data)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Text != "plain ✓\r\n" || parsed.HTML != "<p>rich ✓</p>\r\n" {
		t.Fatalf("parts %q and %q, want %q and %q", parsed.Text, parsed.HTML, m.Text, m.HTML)
	}
}

// TestMailerRequiresTLSByDefault: to an SMTP server that is not on a
// loopback host, mail goes over TLS or not at all (unless require_tls is
// false); to a loopback host, in clear when the server offers no STARTTLS.
func TestMailerRequiresTLSByDefault(t *testing.T) {
	srv := startSMTP(t, nil, nil, "", "")
	for _, tc := range []struct {
		host, requireTLS string
		wantSent         bool
	}{
		{"smtp.example.org", "", false},
		{"localhost", "", true},
		{"smtp.example.org", "false", true},
	} {
		t.Run(tc.host+" "+tc.requireTLS, func(t *testing.T) {
			env := []string{"THREEPIDD_SERVER_NAME=hs.test", "THREEPIDD_HOMESERVER_URL=http://127.0.0.1:1", "THREEPIDD_HOMESERVER_MIRROR=none",
				"THREEPIDD_DATABASE_DSN=" + filepath.Join(t.TempDir(), "t.db"),
				"THREEPIDD_EMAIL_SMTP_HOST=" + tc.host, "THREEPIDD_EMAIL_SMTP_PORT=" + strconv.Itoa(srv.addr.Port),
				"THREEPIDD_EMAIL_FROM=noreply@example.org"}
			if tc.requireTLS != "" {
				env = append(env, "THREEPIDD_EMAIL_REQUIRE_TLS="+tc.requireTLS)
			}
			cfg, err := config.Load("", env)
			if err != nil {
				t.Fatal(err)
			}
			m := NewMailer(cfg.Email, cfg.ServerName)
			m.dialTo = srv.addr.String()
			err = m.Send(context.Background(), Message{To: "frank@example.com", Subject: "Hi", Text: "text\n"})
			if !tc.wantSent {
				if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
					t.Fatalf("sent without TLS to %s: %v", tc.host, err)
				}
				srv.assertNothingDelivered(t)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := srv.next(t); d.secure {
				t.Fatal("delivered over TLS by a server that offers none")
			}
		})
	}
}

func TestMailerAuth(t *testing.T) {
	tests := []struct {
		name     string
		offered  []string
		password string // the client's
		wantMech string // "" means the send fails
	}{
		{"PLAIN", []string{sasl.Plain}, "pa55word", sasl.Plain},
		{"LOGIN", []string{sasl.Login}, "pa55word", sasl.Login},
		{"PLAIN preferred", []string{sasl.Login, sasl.Plain}, "pa55word", sasl.Plain},
		{"wrong password", []string{sasl.Plain}, "wr0ngpass", ""},
		{"no usable mechanism", []string{"CRAM-MD5"}, "pa55word", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startSMTP(t, nil, tc.offered, "threepidd", "pa55word")
			cfg := srv.email()
			cfg.SMTPUsername, cfg.SMTPPassword = "threepidd", tc.password
			err := NewMailer(cfg, "hs.test").Send(context.Background(), Message{To: "bob@example.com", Subject: "Code", Text: "123456\n"})
			if tc.wantMech == "" {
				if err == nil {
					t.Fatal("Send succeeded")
				}
				if strings.Contains(err.Error(), tc.password) {
					t.Fatalf("error reveals the password: %v", err)
				}
				srv.assertNothingDelivered(t)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := srv.next(t); d.mech != tc.wantMech || d.user != "threepidd" {
				t.Fatalf("authenticated with %q as %q, want %s as threepidd", d.mech, d.user, tc.wantMech)
			}
		})
	}
}

func TestMailerTLS(t *testing.T) {
	serverTLS, roots := selfSigned(t)
	tests := []struct {
		name       string
		offerTLS   bool
		requireTLS bool
		wantSecure bool
		wantErr    bool
	}{
		{"required and offered", true, true, true, false},
		{"opportunistic and offered", true, false, true, false},
		{"opportunistic and not offered", false, false, false, false},
		{"required but not offered", false, true, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var conf *tls.Config
			if tc.offerTLS {
				conf = serverTLS
			}
			srv := startSMTP(t, conf, nil, "", "")
			cfg := srv.email()
			cfg.RequireTLS = &tc.requireTLS
			m := NewMailer(cfg, "hs.test")
			m.rootCAs = roots
			err := m.Send(context.Background(), Message{To: "carol@example.com", Subject: "Hi", Text: "text\n"})
			if tc.wantErr {
				if err == nil {
					t.Fatal("Send succeeded")
				}
				srv.assertNothingDelivered(t)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := srv.next(t); d.secure != tc.wantSecure {
				t.Fatalf("delivered over TLS: %v, want %v", d.secure, tc.wantSecure)
			}
		})
	}
}

func TestMailerAuthOverTLS(t *testing.T) {
	// PLAIN after STARTTLS, the production case (no localhost exemption needed).
	serverTLS, roots := selfSigned(t)
	srv := startSMTP(t, serverTLS, []string{sasl.Plain}, "threepidd", "pa55word")
	cfg := srv.email()
	cfg.RequireTLS = new(true)
	cfg.SMTPUsername, cfg.SMTPPassword = "threepidd", "pa55word"
	m := NewMailer(cfg, "hs.test")
	m.rootCAs = roots
	if err := m.Send(context.Background(), Message{To: "dave@example.com", Subject: "Hi", Text: "text\n"}); err != nil {
		t.Fatal(err)
	}
	if d := srv.next(t); !d.secure || d.mech != sasl.Plain {
		t.Fatalf("delivered with TLS %v, AUTH %q; want TLS and PLAIN", d.secure, d.mech)
	}
}

func TestMailerHonoursContext(t *testing.T) {
	// A server that accepts connections and never greets.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		for c := range accepted {
			_ = c.Close()
		}
	})
	cfg := config.Email{SMTPHost: "127.0.0.1", SMTPPort: l.Addr().(*net.TCPAddr).Port, From: "noreply@example.org"}
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 300*time.Millisecond)
		}},
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(300*time.Millisecond, cancel)
			return ctx, cancel
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			start := time.Now()
			if err := NewMailer(cfg, "hs.test").Send(ctx, Message{To: "erin@example.com", Subject: "Hi", Text: "text\n"}); err == nil {
				t.Fatal("Send to a silent server succeeded")
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Fatalf("Send took %v despite a context ending after 300ms", elapsed)
			}
		})
	}
}

func TestMailerRejectsBadAddresses(t *testing.T) {
	srv := startSMTP(t, nil, nil, "", "")
	tests := []struct {
		name, from, to string
	}{
		{"recipient", "noreply@example.org", "not an address"},
		{"recipient with a header", "noreply@example.org", "x@example.org\r\nBcc: y@example.org"},
		{"sender", "nobody", "frank@example.com"},
	}
	for _, tc := range tests {
		cfg := srv.email()
		cfg.From = tc.from
		if err := NewMailer(cfg, "hs.test").Send(context.Background(), Message{To: tc.to, Subject: "Hi", Text: "text\n"}); err == nil {
			t.Errorf("%s: Send(%q) from %q succeeded", tc.name, tc.to, tc.from)
		}
	}
	srv.assertNothingDelivered(t)
}

func TestMailerServerDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	cfg := config.Email{SMTPHost: "127.0.0.1", SMTPPort: port, From: "noreply@example.org"}
	err = NewMailer(cfg, "hs.test").Send(context.Background(), Message{To: "gina@example.com", Subject: "Hi", Text: "text\n"})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:"+strconv.Itoa(port)) {
		t.Fatalf("Send to a closed port: %v, want an error naming the server", err)
	}
}

// TestMailerReusesConnections: consecutive messages share one connection, a
// connection the server dropped while idle is replaced without an error,
// concurrent messages each get a connection of their own, and Close ends the
// idle ones with QUIT.
func TestMailerReusesConnections(t *testing.T) {
	t.Run("sequential", func(t *testing.T) {
		srv := startSMTP(t, nil, nil, "", "")
		m := NewMailer(srv.email(), "hs.test")
		defer m.Close()
		for i := range 3 {
			if err := m.Send(context.Background(), Message{To: fmt.Sprintf("seq%d@example.com", i), Subject: "Hi", Text: "text\n"}); err != nil {
				t.Fatal(err)
			}
			if d := srv.next(t); len(d.to) != 1 || d.to[0] != fmt.Sprintf("seq%d@example.com", i) {
				t.Fatalf("message %d delivered to %v", i, d.to)
			}
		}
		if n := srv.conns.Load(); n != 1 {
			t.Fatalf("3 messages used %d connections, want 1", n)
		}
	})

	t.Run("dropped while idle", func(t *testing.T) {
		srv := startSMTPIdle(t, nil, []string{sasl.Plain}, "user", "secret", 200*time.Millisecond)
		cfg := srv.email()
		cfg.SMTPUsername, cfg.SMTPPassword = "user", "secret"
		m := NewMailer(cfg, "hs.test")
		defer m.Close()
		if err := m.Send(context.Background(), Message{To: "first@example.com", Subject: "Hi", Text: "text\n"}); err != nil {
			t.Fatal(err)
		}
		srv.next(t)
		deadline := time.Now().Add(10 * time.Second)
		for srv.logouts.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond) // the server drops the idle connection
		}
		if err := m.Send(context.Background(), Message{To: "second@example.com", Subject: "Hi", Text: "text\n"}); err != nil {
			t.Fatalf("send after the server dropped the idle connection: %v", err)
		}
		if d := srv.next(t); d.to[0] != "second@example.com" || d.user != "user" {
			t.Fatalf("delivered %+v", d)
		}
		if n := srv.conns.Load(); n != 2 {
			t.Fatalf("%d connections, want 2", n)
		}
		srv.assertNothingDelivered(t) // sent once, not twice
	})

	t.Run("idle connections are ended", func(t *testing.T) {
		srv := startSMTP(t, nil, nil, "", "")
		m := NewMailer(srv.email(), "hs.test")
		m.idleTimeout = 100 * time.Millisecond
		if err := m.Send(context.Background(), Message{To: "quiet@example.com", Subject: "Hi", Text: "text\n"}); err != nil {
			t.Fatal(err)
		}
		srv.next(t)
		deadline := time.Now().Add(10 * time.Second)
		for srv.logouts.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		m.mu.Lock()
		idle := len(m.idle)
		m.mu.Unlock()
		if srv.logouts.Load() != 1 || idle != 0 {
			t.Fatalf("after the idle timeout: %d sessions ended, %d idle; want 1 and 0", srv.logouts.Load(), idle)
		}
	})

	t.Run("concurrent, then Close", func(t *testing.T) {
		srv := startSMTP(t, nil, nil, "", "")
		m := NewMailer(srv.email(), "hs.test")
		const n = 12
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				errs <- m.Send(context.Background(), Message{To: fmt.Sprintf("c%d@example.com", i), Subject: "Hi", Text: "text\n"})
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		got := map[string]bool{}
		for range n {
			got[srv.next(t).to[0]] = true
		}
		if len(got) != n {
			t.Fatalf("%d distinct recipients delivered, want %d", len(got), n)
		}
		m.mu.Lock()
		idle := len(m.idle)
		m.mu.Unlock()
		if idle > maxIdleConns {
			t.Fatalf("%d idle connections kept, at most %d", idle, maxIdleConns)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for srv.logouts.Load() != srv.conns.Load() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if open := srv.conns.Load() - srv.logouts.Load(); open != 0 {
			t.Fatalf("%d connections still open after Close", open)
		}
		// After Close a message still goes, on a connection closed after use.
		if err := m.Send(context.Background(), Message{To: "late@example.com", Subject: "Hi", Text: "text\n"}); err != nil {
			t.Fatal(err)
		}
		srv.next(t)
	})
}
