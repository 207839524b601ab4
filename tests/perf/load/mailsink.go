package load

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/threepidd/threepidd/internal/mailsink"
)

// MailSink is an SMTP server on 127.0.0.1 that hands the first link of each
// message to the client waiting for its recipient, and keeps nothing. The
// e2e fake (fakes.SMTPSink) keeps every message and lets a test search them;
// at thousands of messages a second that search, repeated by each waiting
// client on every arrival, would be the bottleneck of the run.
type MailSink struct {
	core *mailsink.Sink

	mu      sync.Mutex
	waiting map[string]chan string // lower-cased recipient → its link, once

	unexpected atomic.Int64
}

// NewMailSink starts a sink on an OS-chosen port.
func NewMailSink() (*MailSink, error) {
	s := &MailSink{waiting: make(map[string]chan string)}
	core, err := mailsink.Start(func(m mailsink.Mail) {
		for _, rcpt := range m.To {
			s.deliver(rcpt, m.FirstLink())
		}
	}, nil)
	if err != nil {
		return nil, err
	}
	s.core = core
	return s, nil
}

// Port is the port the sink listens on.
func (s *MailSink) Port() int { return s.core.Addr().Port }

// Close stops the sink.
func (s *MailSink) Close() error {
	s.core.Close()
	return nil
}

// Expect registers a wait for the next message to address; the returned
// channel receives its first link. Call Forget when done waiting.
func (s *MailSink) Expect(address string) <-chan string {
	ch := make(chan string, 1)
	s.mu.Lock()
	s.waiting[strings.ToLower(address)] = ch
	s.mu.Unlock()
	return ch
}

// Forget drops the wait for address, if any.
func (s *MailSink) Forget(address string) {
	s.mu.Lock()
	delete(s.waiting, strings.ToLower(address))
	s.mu.Unlock()
}

// Unexpected counts the messages (or recipients) nobody was waiting for, or
// without a link.
func (s *MailSink) Unexpected() int64 { return s.unexpected.Load() }

// deliver hands link to the waiter for rcpt.
func (s *MailSink) deliver(rcpt, link string) {
	s.mu.Lock()
	ch, ok := s.waiting[strings.ToLower(rcpt)]
	delete(s.waiting, strings.ToLower(rcpt))
	s.mu.Unlock()
	if !ok || link == "" {
		s.unexpected.Add(1)
		return
	}
	ch <- link // buffered, and removed from waiting: never blocks
}
