package delivery

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

func TestSMSSender(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		wantErr bool
	}{
		{"accepted", http.StatusOK, false},
		{"accepted without body", http.StatusNoContent, false},
		{"accepted for later", http.StatusAccepted, false},
		{"gateway error", http.StatusInternalServerError, true},
		{"gateway refuses", http.StatusBadRequest, true},
		{"wrong URL", http.StatusNotFound, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan map[string]any, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != "/sms" {
					t.Errorf("request %s %s, want POST /sms", r.Method, r.URL.Path)
				}
				if ct := r.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q, want application/json", ct)
				}
				var body map[string]any
				if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
					t.Errorf("body is not JSON: %v", err)
				}
				got <- body
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(`{"status":"whatever"}`))
			}))
			defer srv.Close()

			err := NewSMSSender(srv.URL+"/sms", srv.Client()).Send(context.Background(),
				"447700900123", "123456", "Your code is 123456")
			if tc.wantErr != (err != nil) {
				t.Fatalf("Send = %v, want error: %v", err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "123456") {
				t.Errorf("error reveals the code: %v", err)
			}
			want := map[string]any{"to": "447700900123", "token": "123456", "text": "Your code is 123456"}
			body := <-got
			if len(body) != len(want) {
				t.Fatalf("body %v, want exactly %v", body, want)
			}
			for k, v := range want {
				if body[k] != v {
					t.Errorf("body[%q] = %v, want %q", k, body[k], v)
				}
			}
		})
	}
}

func TestSMSSenderDefaultClientAndUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	url := srv.URL
	srv.Close() // nothing listens there any more
	if err := NewSMSSender(url, nil).Send(context.Background(), "14155550132", "654321", "code 654321"); err == nil {
		t.Fatal("Send to a closed server succeeded")
	}
}

func TestSMSSenderHonoursContext(t *testing.T) {
	// The gateway takes the request and does not answer until the test ends;
	// cancelling the context must end Send.
	arrived, release := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		close(arrived)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release) // runs first: lets the handler return before Close waits for it
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-arrived
		cancel()
	}()
	if err := NewSMSSender(srv.URL, srv.Client()).Send(ctx, "14155550132", "654321", "code"); err == nil {
		t.Fatal("Send to a gateway that never answers succeeded")
	}
}

// TestSMSSenderNoRedirect: a redirect is the gateway's answer, an error; the
// code is never posted (or turned into a GET) elsewhere, whatever the client.
func TestSMSSenderNoRedirect(t *testing.T) {
	var elsewhere atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	defer target.Close()
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect} {
		moved := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/sms", status)
		}))
		for name, client := range map[string]*http.Client{"default client": nil, "client following redirects": moved.Client()} {
			err := NewSMSSender(moved.URL+"/sms", client).Send(context.Background(), "447700900123", "123456", "Your code is 123456")
			if err == nil || !strings.Contains(err.Error(), strconv.Itoa(status)) {
				t.Errorf("HTTP %d, %s: Send = %v, want the redirect as an error", status, name, err)
			}
		}
		moved.Close()
	}
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("the redirect target got %d requests", n)
	}
}
