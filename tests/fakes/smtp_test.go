package fakes

import (
	"net"
	"net/smtp"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func smtpSend(s *SMTPSink, auth smtp.Auth, to, msg string) error {
	addr := net.JoinHostPort(s.Host(), strconv.Itoa(s.Port()))
	return smtp.SendMail(addr, auth, "threepidd@hs.test", []string{to}, []byte(strings.ReplaceAll(msg, "\n", "\r\n")))
}

func TestSMTPSinkDecodesMessages(t *testing.T) {
	tests := []struct {
		name     string
		msg      string
		subject  string
		text     string
		firstURL string
	}{
		{
			name:     "plain 7bit",
			msg:      "Subject: Validate\nFrom: threepidd@hs.test\n\nOpen https://hs.test/validate?token=abc.\n",
			subject:  "Validate",
			text:     "Open https://hs.test/validate?token=abc.\r\n",
			firstURL: "https://hs.test/validate?token=abc",
		},
		{
			name: "alternative, quoted-printable, encoded subject",
			msg: "Subject: =?UTF-8?q?Caf=C3=A9?=\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=XX\n\n" +
				"--XX\nContent-Type: text/html\n\n<a href=\"http://html.test/\">x</a>\n" +
				"--XX\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n" +
				"A long line =\ncontinued: http://hs.test/submit?sid=3D1&token=3DT\n--XX--\n",
			subject:  "Café",
			text:     "A long line continued: http://hs.test/submit?sid=1&token=T",
			firstURL: "http://hs.test/submit?sid=1&token=T",
		},
		{
			name: "mixed containing alternative, base64",
			msg: "Subject: Nested\nContent-Type: multipart/mixed; boundary=OUT\n\n--OUT\n" +
				"Content-Type: multipart/alternative; boundary=IN\n\n--IN\n" +
				"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n" +
				"Q29kZTogMTIzNDU2\n--IN--\n--OUT--\n",
			subject: "Nested",
			text:    "Code: 123456",
		},
	}
	s := NewSMTPSink(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to := "user" + strconv.Itoa(i) + "@example.org"
			if err := smtpSend(s, nil, to, tt.msg); err != nil {
				t.Fatal(err)
			}
			m := s.WaitMail(t, strings.ToUpper(to), 5*time.Second)
			if m.From != "threepidd@hs.test" || !reflect.DeepEqual(m.To, []string{to}) || m.Subject != tt.subject || m.Text != tt.text || m.FirstLink() != tt.firstURL {
				t.Errorf("mail = from %q to %v subject %q text %q link %q", m.From, m.To, m.Subject, m.Text, m.FirstLink())
			}
		})
	}
	if n := len(s.Mails()); n != len(tests) {
		t.Errorf("Mails() has %d, want %d", n, len(tests))
	}
}

func TestSMTPSinkWaitMailTakesEachOnce(t *testing.T) {
	s := NewSMTPSink(t)
	for _, subject := range []string{"one", "two"} {
		if err := smtpSend(s, nil, "a@example.org", "Subject: "+subject+"\n\nbody\n"); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"one", "two"} {
		if got := s.WaitMail(t, "a@example.org", 5*time.Second).Subject; got != want {
			t.Errorf("WaitMail subject = %q, want %q", got, want)
		}
	}
}

func TestSMTPSinkAuthAndFailure(t *testing.T) {
	s := NewSMTPSink(t)
	s.RequireAuth("mailer", "secret")
	tests := []struct {
		name    string
		auth    smtp.Auth
		fail    bool
		wantErr string // "" = accepted
	}{
		{"no auth", nil, false, "530"},
		{"wrong password", smtp.PlainAuth("", "mailer", "nope", "127.0.0.1"), false, "535"},
		{"right password", smtp.PlainAuth("", "mailer", "secret", "127.0.0.1"), false, ""},
		{"DATA refused", smtp.PlainAuth("", "mailer", "secret", "127.0.0.1"), true, "451"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.SetFail(tt.fail)
			before := len(s.Mails())
			err := smtpSend(s, tt.auth, "b@example.org", "Subject: x\n\ny\n")
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("send: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("send error = %v, want %s", err, tt.wantErr)
			}
			if kept := len(s.Mails()) - before; kept != map[bool]int{true: 1, false: 0}[tt.wantErr == ""] {
				t.Errorf("kept %d mails", kept)
			}
		})
	}
}
