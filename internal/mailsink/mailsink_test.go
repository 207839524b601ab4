package mailsink

import (
	"net"
	"net/smtp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name                string
		msg                 string
		subject, text, html string
		wantErr             string // "" = no error
	}{
		{"plain", "Subject: Hi\n\nOpen https://x.test/v?t=1.\n", "Hi", "Open https://x.test/v?t=1.\n", "", ""},
		{"quoted-printable with a soft line break", "Subject: Q\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
			"Open http://127.0.0.1:1/submit?sid=3Da&client_secret=3Ds&tok=\r\nen=3Db\r\n",
			"Q", "Open http://127.0.0.1:1/submit?sid=a&client_secret=s&token=b\r\n", "", ""},
		{"base64", "Subject: B\nContent-Transfer-Encoding: base64\n\nQ29kZTogMTIz\n", "B", "Code: 123", "", ""},
		{"html only", "Subject: H\nContent-Type: text/html\n\n<p>x</p>\n", "H", "", "<p>x</p>\n", ""},
		{"alternative", "Subject: A\nContent-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/plain; charset=UTF-8\n" +
			"Content-Transfer-Encoding: quoted-printable\n\nGr=C3=BC=C3=9Fe\n--b\nContent-Type: text/html; charset=utf-8\n\n<p>Gr\u00fc\u00dfe</p>\n--b--\n",
			"A", "Grüße", "<p>Grüße</p>", ""},
		{"other charset", "Subject: L\nContent-Type: text/plain; charset=iso-8859-1\n\nbody\n", "", "", "", "is not UTF-8"},
		{"unknown encoding", "Subject: U\nContent-Transfer-Encoding: x-uu\n\nbody\n", "", "", "", "unknown transfer encoding"},
		{"bad content type", "Subject: C\nContent-Type: /\n\nbody\n", "", "", "", "parse content type"},
		{"no header end", "Subject", "", "", "", "parse message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.msg))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || m.Subject != tt.subject || m.Text != tt.text || m.HTML != tt.html {
				t.Errorf("Parse = %q, %q, %q, %v; want %q, %q, %q", m.Subject, m.Text, m.HTML, err, tt.subject, tt.text, tt.html)
			}
		})
	}
}

func TestFirstLink(t *testing.T) {
	tests := []struct{ text, want string }{
		{"Open https://x.test/v?t=1.", "https://x.test/v?t=1"},
		{"(see http://x.test/a)", "http://x.test/a"},
		{"no link here", ""},
	}
	for _, tt := range tests {
		if got := (Mail{Text: tt.text}).FirstLink(); got != tt.want {
			t.Errorf("FirstLink(%q) = %q, want %q", tt.text, got, tt.want)
		}
	}
}

func TestSinkDelivers(t *testing.T) {
	got := make(chan Mail, 1)
	s, err := Start(func(m Mail) { got <- m }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := net.JoinHostPort(s.Addr().IP.String(), strconv.Itoa(s.Addr().Port))
	if err := smtp.SendMail(addr, nil, "from@x.test", []string{"to@x.test"}, []byte("Subject: S\r\n\r\nbody\r\n")); err != nil {
		t.Fatalf("send: %v", err)
	}
	select {
	case m := <-got:
		if m.From != "from@x.test" || !slices.Equal(m.To, []string{"to@x.test"}) || m.Subject != "S" || m.Text != "body\r\n" {
			t.Errorf("delivered %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no mail delivered")
	}
}
