package demo

import (
	"context"
	"fmt"

	"github.com/threepidd/threepidd/internal/mailsink"
)

// smtpSink is the SMTP stand-in: a mailsink.Sink whose accepted messages go
// to a channel the story reads.
type smtpSink struct {
	*mailsink.Sink
	mails chan mailsink.Mail
}

// startSMTPSink listens on 127.0.0.1 (OS-chosen port) and serves until Close.
func startSMTPSink() (*smtpSink, error) {
	mails := make(chan mailsink.Mail, 16)
	core, err := mailsink.Start(func(m mailsink.Mail) {
		select {
		case mails <- m:
		default: // nobody reads mails beyond the story's: drop them
		}
	}, nil)
	if err != nil {
		return nil, err // already says "smtp sink: listen: …"
	}
	return &smtpSink{Sink: core, mails: mails}, nil
}

// next waits for the next message, up to ctx's end.
func (s *smtpSink) next(ctx context.Context) (mailsink.Mail, error) {
	select {
	case m := <-s.mails:
		return m, nil
	case <-ctx.Done():
		return mailsink.Mail{}, fmt.Errorf("wait for the validation mail: %w", ctx.Err())
	}
}
