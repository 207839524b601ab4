// Package requestid carries the ID of the client request being served in its
// context: package router sets it (the reverse proxy's X-Request-ID when it
// is trusted and sane, else a new one) and echoes it in the answer, every log
// line written with that context carries it (NewLogHandler), and package
// outbound sends it on the requests threepidd makes on the request's behalf.
// Background work has none.
package requestid

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
)

// Header is the HTTP header carrying a request ID.
const Header = "X-Request-ID"

// LogKey is the attribute a log line's request ID is written under.
const LogKey = "request_id"

// maxLen bounds an ID taken from a request.
const maxLen = 128

type key struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, key{}, id)
}

// FromContext returns the request ID ctx carries, or "".
func FromContext(ctx context.Context) string {
	id, _ := ctx.Value(key{}).(string)
	return id
}

// New returns a fresh ID: 16 random bytes in hex, like nginx's $request_id.
func New() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Valid reports whether id is safe to take from a request and pass on: 1 to
// 128 letters, digits and "-_.:+=/@~" (hex, UUIDs, base64, the usual
// tracing formats), nothing a log line or a header could be forged with.
func Valid(id string) bool {
	if id == "" || len(id) > maxLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '_' || c == '.' || c == ':' || c == '+' || c == '=' || c == '/' || c == '@' || c == '~':
		default:
			return false
		}
	}
	return true
}

// NewLogHandler wraps h so that every record logged with a context carrying
// a request ID gets it as the attribute LogKey.
func NewLogHandler(h slog.Handler) slog.Handler { return logHandler{h} }

type logHandler struct{ slog.Handler }

// Handle implements slog.Handler.
func (h logHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := FromContext(ctx); id != "" {
		r = r.Clone()
		r.AddAttrs(slog.String(LogKey, id))
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return logHandler{h.Handler.WithAttrs(attrs)}
}

// WithGroup implements slog.Handler.
func (h logHandler) WithGroup(name string) slog.Handler { return logHandler{h.Handler.WithGroup(name)} }
