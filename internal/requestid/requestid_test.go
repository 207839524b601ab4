package requestid

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for _, tt := range []struct {
		id   string
		want bool
	}{
		{"5f0c6b1a9e2d4c7b8a3f1e0d2c4b6a89", true},
		{"123e4567-e89b-12d3-a456-426614174000", true},
		{"Root=1-67891233-abcdef012345678912345678", true},
		{"req_01H:x.y+z/w@v~u", true},
		{strings.Repeat("a", 128), true},
		{"", false},
		{strings.Repeat("a", 129), false},
		{"a b", false},
		{"a\nlevel=ERROR", false},
		{"a\"b", false},
		{"a,b", false},
		{"é", false},
	} {
		if got := Valid(tt.id); got != tt.want {
			t.Errorf("Valid(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
	if a, b := New(), New(); !Valid(a) || len(a) != 32 || a == b {
		t.Fatalf("New gave %q and %q", a, b)
	}
}

// TestLogHandler: records logged with a request's context carry its ID,
// through WithAttrs too; others carry none.
func TestLogHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewLogHandler(slog.NewJSONHandler(&buf, nil))).With("component", "test")
	ctx := NewContext(context.Background(), "abc-123")
	log.InfoContext(ctx, "in a request")
	log.Info("in the background")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %s", len(lines), buf.String())
	}
	for i, want := range []string{"abc-123", ""} {
		var rec map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &rec); err != nil {
			t.Fatal(err)
		}
		if got, _ := rec[LogKey].(string); got != want || rec["component"] != "test" {
			t.Errorf("line %d: %s", i, lines[i])
		}
	}
}
