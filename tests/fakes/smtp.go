package fakes

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/internal/mailsink"
)

// Mail is one message the SMTP sink accepted: From, To, Subject, Text, Raw
// and FirstLink (see mailsink.Mail).
type Mail = mailsink.Mail

// SMTPSink is a real SMTP server on 127.0.0.1 that keeps every message it accepts.
type SMTPSink struct {
	core  *mailsink.Sink
	inbox *smtpInbox[Mail]
}

// NewSMTPSink starts an SMTP sink; it stops when the test ends.
func NewSMTPSink(t testing.TB) *SMTPSink {
	t.Helper()
	inbox := newSMTPInbox[Mail]()
	core, err := mailsink.Start(inbox.add, slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn))
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(core.Close)
	return &SMTPSink{core: core, inbox: inbox}
}

// Host is the address the sink listens on.
func (s *SMTPSink) Host() string { return s.core.Addr().IP.String() }

// Port is the port the sink listens on.
func (s *SMTPSink) Port() int { return s.core.Addr().Port }

// Mails returns every message accepted so far, in order.
func (s *SMTPSink) Mails() []Mail { return s.inbox.all() }

// WaitMail returns the next message to recipient to (case-insensitive) that no
// earlier WaitMail returned, waiting up to timeout; it fails the test otherwise.
func (s *SMTPSink) WaitMail(t testing.TB, to string, timeout time.Duration) Mail {
	t.Helper()
	return s.inbox.wait(t, "mail to "+to, timeout, func(m Mail) bool {
		for _, rcpt := range m.To {
			if strings.EqualFold(rcpt, to) {
				return true
			}
		}
		return false
	})
}

// SetFail makes the sink answer the end of DATA with 451 while fail is true.
func (s *SMTPSink) SetFail(fail bool) { s.core.SetFail(fail) }

// RequireAuth makes the sink advertise AUTH PLAIN and refuse MAIL FROM until
// the client has authenticated as user with password.
func (s *SMTPSink) RequireAuth(user, password string) { s.core.RequireAuth(user, password) }

// smtpInbox keeps received items and lets tests wait for one; the SMS sink
// uses it too.
type smtpInbox[T any] struct {
	mu      sync.Mutex
	items   []T
	taken   []bool
	changed chan struct{} // closed and replaced on every add
}

func newSMTPInbox[T any]() *smtpInbox[T] {
	return &smtpInbox[T]{changed: make(chan struct{})}
}

func (b *smtpInbox[T]) add(item T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.items = append(b.items, item)
	b.taken = append(b.taken, false)
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *smtpInbox[T]) all() []T {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]T(nil), b.items...)
}

// wait returns the oldest item that matches and was not returned before,
// waiting up to timeout; it fails the test when none comes.
func (b *smtpInbox[T]) wait(t testing.TB, what string, timeout time.Duration, match func(T) bool) T {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		for i, item := range b.items {
			if !b.taken[i] && match(item) {
				b.taken[i] = true
				b.mu.Unlock()
				return item
			}
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no %s within %v (received %d in all)", what, timeout, len(b.all()))
		}
	}
}
