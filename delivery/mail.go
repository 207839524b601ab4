// Package delivery sends validation messages: e-mails over SMTP and SMS
// through the operator's gateway webhook.
package delivery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	mail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"

	"github.com/threepidd/threepidd/config"
)

// sendTimeout bounds one delivery: dialling, TLS, AUTH and the transfer.
const sendTimeout = 15 * time.Second

// Mailer sends plain-text e-mails through the configured SMTP server. It
// opens one connection per message and is safe for concurrent use.
type Mailer struct {
	cfg config.Email
	// rootCAs, when set, replaces the system roots for verifying the server
	// (tests use it with their own certificate).
	rootCAs *x509.CertPool
}

// NewMailer returns a Mailer for cfg. STARTTLS is mandatory when
// cfg.RequireTLS is set and used whenever offered otherwise; with a username,
// the client authenticates with PLAIN or LOGIN, whichever the server offers,
// and only over TLS or to a server on localhost.
func NewMailer(cfg config.Email) *Mailer {
	return &Mailer{cfg: cfg}
}

// Send sends a text/plain message from the configured From address to one
// recipient, giving up after 15 seconds or when ctx ends.
func (m *Mailer) Send(ctx context.Context, to, subject, text string) error {
	server := net.JoinHostPort(m.cfg.SMTPHost, strconv.Itoa(m.cfg.SMTPPort))
	msg := mail.NewMsg()
	if err := msg.From(m.cfg.From); err != nil {
		return fmt.Errorf("send mail: sender %q: %w", m.cfg.From, err)
	}
	if err := msg.To(to); err != nil {
		return fmt.Errorf("send mail: recipient %q: %w", to, err)
	}
	msg.Subject(subject)
	msg.SetBodyString(mail.TypeTextPlain, text)

	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	client, err := mail.NewClient(m.cfg.SMTPHost, m.clientOptions(ctx)...)
	if err != nil {
		return fmt.Errorf("send mail via %s: %w", server, err)
	}
	if err := client.DialAndSendWithContext(ctx, msg); err != nil {
		return fmt.Errorf("send mail to %s via %s: %w", to, server, err)
	}
	return nil
}

// clientOptions configures go-mail for one message sent within ctx.
func (m *Mailer) clientOptions(ctx context.Context) []mail.Option {
	policy := mail.TLSOpportunistic
	if m.cfg.RequireTLS {
		policy = mail.TLSMandatory
	}
	opts := []mail.Option{
		mail.WithTimeout(sendTimeout),
		mail.WithTLSPolicy(policy),
		mail.WithDialContextFunc(dialWithin(ctx)),
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

// dialWithin returns a dialer whose connections obey ctx for their whole life.
// go-mail applies its context to dialling only, so a server that stalls
// mid-conversation would otherwise hold Send forever.
func dialWithin(ctx context.Context) mail.DialContextFunc {
	return func(dialCtx context.Context, network, address string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(dialCtx, network, address)
		if err != nil {
			return nil, err
		}
		if deadline, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(deadline)
		}
		// Cancellation before the deadline unblocks reads and writes too.
		context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
		return conn, nil
	}
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
