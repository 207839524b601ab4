package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for the stand-ins' goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var dirRE = regexp.MustCompile(`SQLite in (\S+),`)

// TestRun tells the story, checks that the service answers the curl line it
// printed, stops the demo (context cancelled, or Enter on its input) and
// checks that every step was printed and Run returned nil.
func TestRun(t *testing.T) {
	tests := []struct {
		name  string
		enter bool // stop with a line on Stdin, else by cancelling the context
	}{
		{name: "context cancelled"},
		{name: "enter", enter: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			stdinR, stdinW := io.Pipe()
			defer stdinW.Close()
			var out lockedBuffer
			var listed string
			opts := Options{Ready: func(url string) {
				listed = get(t, url+"/_matrix/client/v3/account/3pid")
				if tt.enter {
					if _, err := io.WriteString(stdinW, "\n"); err != nil {
						t.Errorf("write stdin: %v", err)
					}
					return
				}
				cancel()
			}}
			if tt.enter {
				opts.Stdin = stdinR
			}

			err := Run(ctx, &out, opts)
			got := out.String()
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, got)
			}
			if !strings.Contains(listed, `"address":"`+Email+`"`) {
				t.Errorf("GET /account/3pid after the story: %s, want %s listed", listed, Email)
			}
			want := []string{
				"→ POST /_matrix/client/v3/account/3pid/email/requestToken",
				"Subject: [" + ServerName + "] Confirm your e-mail address",
				"← 401 Unauthorized",
				`"session": "demo-uia-session-1"`,
				"with the right password → 200",
				`"address": "` + Email + `"`,
				"→ POST /_matrix/client/v3/account/3pid/bind",
				"→ POST /_matrix/federation/v1/3pid/onupdate",
				`Authorization: X-Matrix origin="` + IdentityServerName + `"`,
				`"mxid": "` + NewOwner + `"`,
				"curl -s -H 'Authorization: Bearer " + Token + "' http://127.0.0.1:",
				"threepidd demo: stopping",
			}
			for i, title := range steps {
				want = append(want, fmt.Sprintf("── %d. %s\n", i+1, title))
			}
			for _, w := range want {
				if !strings.Contains(got, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			if strings.Count(got, "← 200 OK") < 8 {
				t.Errorf("output has %d answers 200, want at least 8", strings.Count(got, "← 200 OK"))
			}
			// The last step's answer carries the section after the onupdate's answer.
			if i, j := strings.Index(got, "3pid/onupdate"), strings.LastIndex(got, `"threepids": {`); i < 0 || j < i {
				t.Errorf("the threepids section is not shown after the onupdate")
			}
			m := dirRE.FindStringSubmatch(got)
			if m == nil {
				t.Fatalf("output names no SQLite directory:\n%s", got)
			}
			if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
				t.Errorf("demo directory %s left behind (stat: %v)", m[1], err)
			}
			if t.Failed() {
				t.Logf("output:\n%s", got)
			}
		})
	}
}

// get answers the body of a GET with the demo token, which must be a 200.
func get(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return ""
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s: %d %s %v", url, resp.StatusCode, body, err)
	}
	return string(body)
}
