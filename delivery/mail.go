// Package delivery sends validation messages: e-mails over SMTP and SMS
// through the operator's gateway webhook.
package delivery

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	mail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"

	"github.com/threepidd/threepidd/config"
)

// sendTimeout bounds one delivery: dialling, TLS, AUTH and the transfer.
const sendTimeout = 15 * time.Second

// Connection reuse: a connection that has sent a message is kept for the
// next one, which then costs MAIL, RCPT and DATA instead of a TCP (and TLS)
// handshake, EHLO and AUTH.
const (
	// maxIdleConns bounds the SMTP connections kept open between messages.
	maxIdleConns = 4
	// idleTimeout is how long an unused connection is kept. Servers wait at
	// least 5 minutes before they drop an idle client (RFC 5321, 4.5.3.2.7).
	idleTimeout = 30 * time.Second
	// quitTimeout bounds the QUIT of a connection being dropped.
	quitTimeout = 2 * time.Second
)

// Message is an e-mail to one recipient: a subject and a plain-text body,
// with an HTML alternative when HTML is set.
type Message struct {
	To, Subject, Text, HTML string
}

// Mailer sends e-mails through the configured SMTP server, with the headers
// of an automated mailer. It keeps up to maxIdleConns connections open
// between messages (each used by one message at a time) and is safe for
// concurrent use. Close closes them.
type Mailer struct {
	cfg config.Email
	// domain is the right-hand side of Message-IDs.
	domain string
	// rootCAs, when set, replaces the system roots for verifying the server
	// (tests use it with their own certificate).
	rootCAs *x509.CertPool
	// dialTo, when set, is where connections go instead of smtp_host (tests
	// use it to reach their server under a name that is not loopback).
	dialTo string

	// idleTimeout is how long an unused connection is kept (idleTimeout, the
	// constant, except in tests).
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   []*smtpConn // most recently used last
	reaper *time.Timer // pending reap of expired idle connections, or nil
	closed bool
}

// smtpConn is an open SMTP session and its network connection, whose
// deadlines the Mailer sets for each message.
type smtpConn struct {
	client   *mail.Client
	conn     net.Conn
	lastUsed time.Time
}

// NewMailer returns a Mailer for cfg whose Message-IDs are on the host of
// serverName. STARTTLS is mandatory when cfg.TLSRequired() and used whenever
// offered otherwise; with a username, the client authenticates with PLAIN
// or LOGIN, whichever the server offers, and only over TLS or to a server
// on localhost.
func NewMailer(cfg config.Email, serverName string) *Mailer {
	domain := serverName
	if host, _, err := net.SplitHostPort(serverName); err == nil {
		domain = host
	}
	if strings.Contains(domain, ":") { // an IPv6 literal
		domain = "[" + strings.Trim(domain, "[]") + "]"
	}
	return &Mailer{cfg: cfg, domain: domain, idleTimeout: idleTimeout}
}

// Send sends m from the configured From address, giving up after 15
// seconds or when ctx ends. It uses an idle connection when there is one,
// and a new one if that fails before the message was handed over (the
// server may have closed it meanwhile).
func (m *Mailer) Send(ctx context.Context, message Message) error {
	server := net.JoinHostPort(m.cfg.SMTPHost, strconv.Itoa(m.cfg.SMTPPort))
	to := message.To
	msg, err := m.compose(message)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	if c := m.takeIdle(); c != nil {
		err := m.sendOn(ctx, c, msg)
		if err == nil {
			return nil
		}
		if !beforeHandover(err) || ctx.Err() != nil {
			return fmt.Errorf("send mail to %s via %s: %w", to, server, err)
		}
	}
	c, err := m.dial(ctx)
	if err != nil {
		return fmt.Errorf("send mail via %s: %w", server, err)
	}
	if err := m.sendOn(ctx, c, msg); err != nil {
		return fmt.Errorf("send mail to %s via %s: %w", to, server, err)
	}
	return nil
}

// compose builds message with the headers a well-behaved automated mailer
// sets: Date, a Message-ID on our domain, and Auto-Submitted (RFC 3834) and
// X-Auto-Response-Suppress (Exchange) so that nothing replies to it.
func (m *Mailer) compose(message Message) (*mail.Msg, error) {
	msg := mail.NewMsg(mail.WithCharset(mail.CharsetUTF8), mail.WithEncoding(mail.EncodingQP))
	if err := msg.From(m.cfg.From); err != nil {
		return nil, fmt.Errorf("send mail: sender %q: %w", m.cfg.From, err)
	}
	if err := msg.To(message.To); err != nil {
		return nil, fmt.Errorf("send mail: recipient %q: %w", message.To, err)
	}
	msg.Subject(message.Subject)
	msg.SetDate()
	msg.SetMessageIDWithValue(rand.Text() + "@" + m.domain)
	msg.SetGenHeader("Auto-Submitted", "auto-generated")
	msg.SetGenHeader("X-Auto-Response-Suppress", "All")
	msg.SetBodyString(mail.TypeTextPlain, message.Text)
	if message.HTML != "" {
		msg.AddAlternativeString(mail.TypeTextHTML, message.HTML)
	}
	return msg, nil
}

// beforeHandover reports whether a send on a reused connection failed before
// the server could have accepted the message (the liveness check or MAIL
// FROM), so that another connection may try it without sending it twice.
func beforeHandover(err error) bool {
	var se *mail.SendError
	return errors.As(err, &se) && (se.Reason == mail.ErrConnCheck || se.Reason == mail.ErrSMTPMailFrom)
}

// dial opens a connection within ctx: connect, greeting, EHLO, STARTTLS and AUTH.
func (m *Mailer) dial(ctx context.Context) (*smtpConn, error) {
	c := &smtpConn{}
	stopWatch := func() bool { return true }
	dial := func(dialCtx context.Context, network, address string) (net.Conn, error) {
		var d net.Dialer
		if m.dialTo != "" {
			address = m.dialTo
		}
		conn, err := d.DialContext(dialCtx, network, address)
		if err != nil {
			return nil, err
		}
		c.conn = conn
		// go-mail applies its context to dialling only; these deadlines keep
		// a server that stalls in the greeting, TLS or AUTH from holding us.
		stopWatch = watch(ctx, conn)
		return conn, nil
	}
	client, err := mail.NewClient(m.cfg.SMTPHost, m.clientOptions(dial)...)
	if err != nil {
		return nil, err
	}
	c.client = client
	err = client.DialWithContext(ctx)
	if interrupted := !stopWatch(); err != nil || interrupted {
		c.drop()
		if err == nil {
			err = ctx.Err()
		}
		return nil, err
	}
	return c, nil
}

// watch bounds conn's reads and writes by ctx: its deadline, and its end
// (which sets a deadline in the past). stop ends the watch; it reports false
// if ctx had already ended, in which case conn is unusable.
func watch(ctx context.Context, conn net.Conn) (stop func() bool) {
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	return context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
}

// sendOn sends msg on c within ctx, then keeps c for the next message, or
// drops it if anything went wrong.
func (m *Mailer) sendOn(ctx context.Context, c *smtpConn, msg *mail.Msg) error {
	stop := watch(ctx, c.conn)
	err := c.client.Send(msg)
	if interrupted := !stop(); err != nil || interrupted {
		c.drop()
		return err
	}
	_ = c.conn.SetDeadline(time.Time{})
	m.putIdle(c)
	return nil
}

// takeIdle returns the most recently used idle connection that is not too
// old, or nil; older ones are dropped.
func (m *Mailer) takeIdle() *smtpConn {
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(m.idle) > 0 {
		c := m.idle[len(m.idle)-1]
		m.idle = m.idle[:len(m.idle)-1]
		if time.Since(c.lastUsed) < m.idleTimeout {
			return c
		}
		go c.quit()
	}
	return nil
}

// putIdle keeps c for the next message, unless the Mailer is closed or has
// enough idle connections.
func (m *Mailer) putIdle(c *smtpConn) {
	c.lastUsed = time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || len(m.idle) >= maxIdleConns {
		go c.quit()
		return
	}
	m.idle = append(m.idle, c)
	if m.reaper == nil {
		m.reaper = time.AfterFunc(m.idleTimeout, m.reap)
	}
}

// reap ends the idle connections unused for idleTimeout, and comes back
// while any remain, so that quiet hours hold no connections open.
func (m *Mailer) reap() {
	m.mu.Lock()
	defer m.mu.Unlock()
	kept := m.idle[:0]
	for _, c := range m.idle {
		if time.Since(c.lastUsed) < m.idleTimeout {
			kept = append(kept, c)
		} else {
			go c.quit()
		}
	}
	clear(m.idle[len(kept):])
	m.idle = kept
	m.reaper = nil
	if len(m.idle) > 0 && !m.closed {
		m.reaper = time.AfterFunc(m.idleTimeout-time.Since(m.idle[0].lastUsed), m.reap)
	}
}

// Close ends the idle connections with QUIT; later messages are sent on
// connections that are closed after use.
func (m *Mailer) Close() error {
	m.mu.Lock()
	idle := m.idle
	m.idle, m.closed = nil, true
	if m.reaper != nil {
		m.reaper.Stop()
		m.reaper = nil
	}
	m.mu.Unlock()
	for _, c := range idle {
		c.quit()
	}
	return nil
}

// quit ends the SMTP session politely, within quitTimeout.
func (c *smtpConn) quit() {
	_ = c.conn.SetDeadline(time.Now().Add(quitTimeout))
	_ = c.client.Close()
	_ = c.conn.Close()
}

// drop closes a connection in an unknown state, without a word.
func (c *smtpConn) drop() {
	if c.conn != nil {
		_ = c.conn.Close()
	}
}

// clientOptions configures go-mail for connections made with dial.
func (m *Mailer) clientOptions(dial mail.DialContextFunc) []mail.Option {
	policy := mail.TLSOpportunistic
	if m.cfg.TLSRequired() {
		policy = mail.TLSMandatory
	}
	opts := []mail.Option{
		mail.WithTimeout(sendTimeout),
		mail.WithTLSPolicy(policy),
		mail.WithDialContextFunc(dial),
		// No NOOP before each message: a connection the server closed
		// fails at MAIL FROM instead, which Send retries on a new one.
		mail.WithoutNoop(),
	}
	if m.cfg.SMTPPort != 0 {
		opts = append(opts, mail.WithPort(m.cfg.SMTPPort))
	}
	if m.rootCAs != nil {
		opts = append(opts, mail.WithTLSConfig(&tls.Config{
			ServerName: m.cfg.SMTPHost,
			RootCAs:    m.rootCAs,
			MinVersion: tls.VersionTLS12,
		}))
	}
	if m.cfg.SMTPUsername != "" {
		opts = append(opts, mail.WithSMTPAuthCustom(&plainOrLogin{
			username: m.cfg.SMTPUsername,
			password: m.cfg.SMTPPassword,
			host:     m.cfg.SMTPHost,
		}))
	}
	return opts
}

// plainOrLogin authenticates with PLAIN when the server offers it, else with
// LOGIN. Both refuse to send the password over a connection that is neither
// TLS nor to localhost. One value serves one connection.
type plainOrLogin struct {
	username, password, host string
	chosen                   smtp.Auth
}

// Start picks the mechanism from those the server advertised.
func (a *plainOrLogin) Start(server *smtp.ServerInfo) (string, []byte, error) {
	switch {
	case slices.Contains(server.Auth, "PLAIN"):
		a.chosen = smtp.PlainAuth("", a.username, a.password, a.host, false)
	case slices.Contains(server.Auth, "LOGIN"):
		a.chosen = smtp.LoginAuth(a.username, a.password, a.host, false)
	default:
		return "", nil, fmt.Errorf("server offers neither AUTH PLAIN nor LOGIN (offers %v)", server.Auth)
	}
	return a.chosen.Start(server)
}

// Next continues with the chosen mechanism.
func (a *plainOrLogin) Next(fromServer []byte, more bool) ([]byte, error) {
	return a.chosen.Next(fromServer, more)
}
