package fakes

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSMSSink(t *testing.T) {
	s := NewSMSSink(t)
	tests := []struct {
		name   string
		method string
		body   string
		fail   int
		status int
	}{
		{"valid", http.MethodPost, `{"to":"447700900123","token":"123456","text":"Your code is 123456"}`, 0, 200},
		{"plus sign", http.MethodPost, `{"to":"+447700900123","token":"1","text":"x"}`, 0, 400},
		{"unknown field", http.MethodPost, `{"to":"447700900123","token":"1","text":"x","extra":1}`, 0, 400},
		{"missing token", http.MethodPost, `{"to":"447700900123","text":"x"}`, 0, 400},
		{"not JSON", http.MethodPost, `to=1`, 0, 400},
		{"GET", http.MethodGet, ``, 0, 405},
		{"gateway failing", http.MethodPost, `{"to":"447700900123","token":"9","text":"x"}`, 503, 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.SetFail(tt.fail)
			req, err := http.NewRequest(tt.method, s.URL(), strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
		})
	}
	got := s.WaitSMS(t, "447700900123", 5*time.Second)
	if got != (SMS{To: "447700900123", Token: "123456", Text: "Your code is 123456"}) {
		t.Errorf("WaitSMS = %+v", got)
	}
	if n := len(s.Messages()); n != 1 {
		t.Errorf("Messages() has %d, want only the valid one", n)
	}
}
