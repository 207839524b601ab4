package storagetest

import "testing"

func TestWithSearchPath(t *testing.T) {
	for _, c := range []struct{ dsn, want string }{
		{"postgres://u@h:5432/db", "postgres://u@h:5432/db?search_path=t_1"},
		{"postgres://u@h/db?sslmode=disable", "postgres://u@h/db?search_path=t_1&sslmode=disable"},
		{"postgresql://h/db?search_path=public", "postgresql://h/db?search_path=t_1"},
		{"host=h dbname=db ", "host=h dbname=db search_path=t_1"},
	} {
		if got := withSearchPath(c.dsn, "t_1"); got != c.want {
			t.Errorf("withSearchPath(%q) = %q, want %q", c.dsn, got, c.want)
		}
	}
}
