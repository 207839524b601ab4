// Package mailsink is an SMTP server on 127.0.0.1 that accepts every message,
// decodes it as a mail client does (Subject, the plain-text and HTML parts)
// and hands it to a function. It is the
// core of the test fake (tests/fakes.SMTPSink) and of `threepidd demo`'s SMTP
// stand-in, and so must not import package testing.
package mailsink

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/textproto"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Timeout bounds every read and write of an SMTP connection to the sink.
const Timeout = 10 * time.Second

// Mail is one message the sink accepted.
type Mail struct {
	// From is the envelope sender (MAIL FROM).
	From string
	// To are the envelope recipients (RCPT TO).
	To []string
	// Subject is the decoded Subject header.
	Subject string
	// Text is the decoded text/plain part (quoted-printable and base64 undone,
	// first text/plain part of a multipart message).
	Text string
	// HTML is the decoded text/html part, likewise.
	HTML string
	// Raw is the message as received after DATA.
	Raw []byte
}

var linkRE = regexp.MustCompile(`https?://[^\s<>"']+`)

// FirstLink returns the first http(s) URL in the text part, without trailing
// punctuation, or "" if there is none.
func (m Mail) FirstLink() string {
	return strings.TrimRight(linkRE.FindString(m.Text), ".,;:!?)]")
}

// Sink is a real SMTP server on 127.0.0.1 (OS-chosen port).
type Sink struct {
	srv     *smtp.Server
	addr    *net.TCPAddr
	served  chan struct{}
	deliver func(Mail)

	mu       sync.Mutex
	fail     bool
	user     string
	password string
}

// Start listens on 127.0.0.1 with an OS-chosen port and serves until Close.
// deliver is called, from the connection's goroutine, with every message
// accepted; errorLog receives the SMTP server's own errors (nil: discarded).
func Start(deliver func(Mail), errorLog *log.Logger) (*Sink, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("smtp sink: listen: %w", err)
	}
	if errorLog == nil {
		errorLog = log.New(io.Discard, "", 0)
	}
	s := &Sink{addr: l.Addr().(*net.TCPAddr), served: make(chan struct{}), deliver: deliver}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &session{sink: s}, nil
	}))
	s.srv.Domain = "localhost"
	s.srv.AllowInsecureAuth = true
	s.srv.ReadTimeout, s.srv.WriteTimeout = Timeout, Timeout
	s.srv.ErrorLog = errorLog
	go func() {
		defer close(s.served)
		_ = s.srv.Serve(l) // returns once Close has closed the listener
	}()
	return s, nil
}

// Close stops the server and waits until it has stopped serving.
func (s *Sink) Close() {
	_ = s.srv.Close()
	<-s.served
}

// Addr is the address the sink listens on.
func (s *Sink) Addr() *net.TCPAddr { return s.addr }

// SetFail makes the sink answer the end of DATA with 451 while fail is true.
func (s *Sink) SetFail(fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = fail
}

// RequireAuth makes the sink advertise AUTH PLAIN and refuse MAIL FROM until
// the client has authenticated as user with password.
func (s *Sink) RequireAuth(user, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.user, s.password = user, password
}

func (s *Sink) state() (fail bool, user, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fail, s.user, s.password
}

var (
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errLocal        = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Requested action aborted: local error in processing"}
)

// session is one SMTP connection to the sink.
type session struct {
	sink   *Sink
	authed bool
	from   string
	to     []string
}

func (ss *session) AuthMechanisms() []string {
	if _, user, _ := ss.sink.state(); user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(_, username, password string) error {
		if _, user, pass := ss.sink.state(); user == "" || username != user || password != pass {
			return smtp.ErrAuthFailed
		}
		ss.authed = true
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if _, user, _ := ss.sink.state(); user != "" && !ss.authed {
		return errAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read message: %w", err)
	}
	if fail, _, _ := ss.sink.state(); fail {
		return errLocal
	}
	m, err := Parse(raw)
	if err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "unparseable message: " + err.Error()}
	}
	m.From, m.To = ss.from, ss.to
	ss.sink.deliver(m)
	return nil
}

func (ss *session) Reset() { ss.from, ss.to = "", nil }

func (ss *session) Logout() error { return nil }

// Parse decodes a message as a mail client shows it: the Subject and the
// first text/plain and text/html parts ("" for a part it lacks), in UTF-8
// (or US-ASCII), whose transfer encoding is undone. The envelope (From, To)
// is left empty.
func Parse(raw []byte) (Mail, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return Mail{}, fmt.Errorf("parse message: %w", err)
	}
	m := Mail{Raw: raw}
	if m.Subject, err = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil {
		return Mail{}, fmt.Errorf("decode subject: %w", err)
	}
	if err := m.readParts(textproto.MIMEHeader(msg.Header), msg.Body); err != nil {
		return Mail{}, err
	}
	return m, nil
}

// readParts fills Text and HTML from an entity, the first part of each kind.
func (m *Mail) readParts(h textproto.MIMEHeader, body io.Reader) error {
	mediaType, params := "text/plain", map[string]string{}
	if ct := h.Get("Content-Type"); ct != "" {
		var err error
		if mediaType, params, err = mime.ParseMediaType(ct); err != nil {
			return fmt.Errorf("parse content type %q: %w", ct, err)
		}
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			part, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read %s part: %w", mediaType, err)
			}
			if err := m.readParts(part.Header, part); err != nil {
				return err
			}
		}
	}
	var into *string
	switch {
	case mediaType == "text/plain" && m.Text == "":
		into = &m.Text
	case mediaType == "text/html" && m.HTML == "":
		into = &m.HTML
	default:
		return nil
	}
	if cs := strings.ToLower(params["charset"]); cs != "" && cs != "utf-8" && cs != "us-ascii" {
		return fmt.Errorf("%s part: charset %q is not UTF-8", mediaType, cs)
	}
	switch cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))); cte {
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	case "base64":
		body = base64.NewDecoder(base64.StdEncoding, body)
	case "", "7bit", "8bit", "binary":
	default:
		return fmt.Errorf("unknown transfer encoding %q", cte)
	}
	data, err := io.ReadAll(body)
	if err != nil {
		return fmt.Errorf("decode %s part: %w", mediaType, err)
	}
	*into = string(data)
	return nil
}
