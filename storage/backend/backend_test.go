package backend

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestOpen(t *testing.T) {
	for _, c := range []struct {
		driver, dsn string
		err         string // "" for success
	}{
		{SQLite, filepath.Join(t.TempDir(), "t.db"), ""},
		{"", "x", `unknown database driver ""`},
		{"mysql", "x", `unknown database driver "mysql" (want "sqlite" or "postgres")`},
		{Postgres, "postgres://%zz", "postgres"},
	} {
		s, err := Open(t.Context(), c.driver, c.dsn)
		if c.err == "" {
			if err != nil {
				t.Errorf("Open(%q): %v", c.driver, err)
				continue
			}
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			continue
		}
		if err == nil {
			s.Close()
			t.Errorf("Open(%q, %q) succeeded", c.driver, c.dsn)
		} else if !strings.Contains(err.Error(), c.err) {
			t.Errorf("Open(%q, %q): error %q, want one containing %q", c.driver, c.dsn, err, c.err)
		}
	}
}
