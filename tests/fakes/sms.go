package fakes

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/mxerr"
)

// smsMaxBody bounds a webhook request body.
const smsMaxBody = 64 << 10

// SMS is one message the SMS webhook sink accepted.
type SMS struct {
	To    string `json:"to"`
	Token string `json:"token"`
	Text  string `json:"text"`
}

// SMSSink is the SMS gateway webhook threepidd posts {"to","token","text"} to.
type SMSSink struct {
	srv   *httptest.Server
	inbox *smtpInbox[SMS]

	mu         sync.Mutex
	failStatus int
}

// NewSMSSink starts an SMS webhook sink on 127.0.0.1; it stops when the test ends.
func NewSMSSink(t testing.TB) *SMSSink {
	t.Helper()
	s := &SMSSink{inbox: newSMTPInbox[SMS]()}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// URL is the webhook URL to configure as msisdn.webhook_url.
func (s *SMSSink) URL() string { return s.srv.URL + "/sms" }

// Messages returns every message accepted so far, in order.
func (s *SMSSink) Messages() []SMS { return s.inbox.all() }

// WaitSMS returns the next message to the E.164 digits to that no earlier
// WaitSMS returned, waiting up to timeout; it fails the test otherwise.
func (s *SMSSink) WaitSMS(t testing.TB, to string, timeout time.Duration) SMS {
	t.Helper()
	return s.inbox.wait(t, "SMS to "+to, timeout, func(m SMS) bool { return m.To == to })
}

// SetFail makes the sink answer every request with status (and keep nothing);
// 0 restores normal answers.
func (s *SMSSink) SetFail(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failStatus = status
}

func smsReject(w http.ResponseWriter, status int, msg string) {
	mxerr.WriteJSON(w, status, map[string]string{"error": msg})
}

// serve accepts POST {"to": "<E.164 digits>", "token", "text"}, all required,
// nothing else.
func (s *SMSSink) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		smsReject(w, http.StatusMethodNotAllowed, "POST only")
		return
	}
	s.mu.Lock()
	failStatus := s.failStatus
	s.mu.Unlock()
	if failStatus != 0 {
		smsReject(w, failStatus, "gateway failure (SetFail)")
		return
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, smsMaxBody))
	dec.DisallowUnknownFields()
	var m SMS
	if err := dec.Decode(&m); err != nil {
		smsReject(w, http.StatusBadRequest, "bad JSON: "+err.Error())
		return
	}
	if m.To == "" || strings.Trim(m.To, "0123456789") != "" || m.Token == "" || m.Text == "" {
		smsReject(w, http.StatusBadRequest, `"to" must be E.164 digits without "+"; "token" and "text" are required`)
		return
	}
	s.inbox.add(m)
	mxerr.WriteJSON(w, http.StatusOK, struct{}{})
}
