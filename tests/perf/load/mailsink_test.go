package load

import (
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/delivery"
)

func TestMailSinkDeliversToTheWaiter(t *testing.T) {
	sink, err := NewMailSink()
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	mailer := delivery.NewMailer(config.Email{SMTPHost: "127.0.0.1", SMTPPort: sink.Port(), From: "threepidd@hs.test"}, "hs.test")
	// A link longer than a quoted-printable line, with '=' to encode.
	link := "http://127.0.0.1:8090/_matrix/client/unstable/add_threepid/email/submit_token?client_secret=s&sid=" +
		strings.Repeat("x", 60) + "&token=" + strings.Repeat("y", 40)

	got := sink.Expect("Alice@Load.Test")
	if err := mailer.Send(t.Context(), delivery.Message{To: "alice@load.test", Subject: "Confirm", Text: "Open\n\n" + link + "\n\nthanks\n"}); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-got:
		if l != link {
			t.Errorf("link %q, want %q", l, link)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no link delivered")
	}
	if n := sink.Unexpected(); n != 0 {
		t.Errorf("Unexpected = %d, want 0", n)
	}

	// Nobody waits any more: the next message to alice is unexpected.
	if err := mailer.Send(t.Context(), delivery.Message{To: "alice@load.test", Subject: "Confirm", Text: link}); err != nil {
		t.Fatal(err)
	}
	if n := sink.Unexpected(); n != 1 {
		t.Errorf("Unexpected = %d after a message nobody waited for, want 1", n)
	}
}
