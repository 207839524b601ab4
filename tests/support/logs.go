package support

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"

	"github.com/threepidd/threepidd/internal/requestid"
)

// LogBuffer holds captured log output; safe for concurrent use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String is everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// CaptureLogs sends every slog record of the default logger, debug
// included, to a buffer (in the text format, with the request ID of a
// request's records as the binary writes it) until t ends. Times are left
// out: their digits could pass for a secret such as an SMS code.
func CaptureLogs(t testing.TB) *LogBuffer {
	t.Helper()
	buf := &LogBuffer{}
	prev := slog.Default()
	slog.SetDefault(slog.New(requestid.NewLogHandler(slog.NewTextHandler(buf, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))))
	t.Cleanup(func() { slog.SetDefault(prev) })
	return buf
}
