package main

import (
	"errors"
	"testing"
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
