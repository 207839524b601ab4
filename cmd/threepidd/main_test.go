package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/internal/requestid"
)

func TestOneLine(t *testing.T) {
	tests := []struct{ err, want string }{
		{"config: listen: required", "config: listen: required"},
		{"open database: failed to connect:\n\t1.2.3.4:5: refused\n\t1.2.3.4:5: refused",
			"open database: failed to connect: 1.2.3.4:5: refused; 1.2.3.4:5: refused"},
		{"a\r\nb\n\nc", "a; b; c"},
	}
	for _, tc := range tests {
		if got := oneLine(errors.New(tc.err)); got != tc.want {
			t.Errorf("oneLine(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestNewLogger: the format and level of log, and the request ID of a
// request's records.
func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(&buf, config.Log{Format: "json", Level: "debug"})
	log.DebugContext(requestid.NewContext(context.Background(), "req-1"), "in a request", "k", "v")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON object: %q", buf.String())
	}
	if rec["msg"] != "in a request" || rec["level"] != "DEBUG" || rec["request_id"] != "req-1" || rec["k"] != "v" {
		t.Fatalf("record %v", rec)
	}
	buf.Reset()
	log = newLogger(&buf, config.Log{Format: "text", Level: "warn"})
	log.Info("dropped")
	log.Warn("kept")
	if got := buf.String(); strings.Contains(got, "dropped") || !strings.Contains(got, "level=WARN msg=kept") {
		t.Fatalf("text at warn: %q", got)
	}
}
