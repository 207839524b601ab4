package threepid

import (
	"encoding/base64"
	"strconv"
	"testing"
)

func TestNewSID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		sid := NewSID()
		if !ValidSID(sid) {
			t.Fatalf("NewSID() = %q, not a valid sid", sid)
		}
		if raw, err := base64.RawURLEncoding.DecodeString(sid); err != nil || len(raw) < 16 {
			t.Fatalf("NewSID() = %q carries %d bytes (err %v), want >= 16", sid, len(raw), err)
		}
		if seen[sid] {
			t.Fatalf("NewSID() repeated %q", sid)
		}
		seen[sid] = true
	}
}

func TestNewEmailToken(t *testing.T) {
	a, b := NewEmailToken(), NewEmailToken()
	if a == b {
		t.Fatalf("NewEmailToken() repeated %q", a)
	}
	raw, err := base64.RawURLEncoding.DecodeString(a)
	if err != nil || len(raw) < 16 {
		t.Fatalf("NewEmailToken() = %q carries %d bytes (err %v), want >= 16", a, len(raw), err)
	}
}

func TestNewSMSCode(t *testing.T) {
	// Every code is six ASCII digits; over many draws each digit value turns up
	// in each position (a biased or truncated generator would miss some).
	var seen [6][10]bool
	for range 2000 {
		code := NewSMSCode()
		if len(code) != 6 {
			t.Fatalf("NewSMSCode() = %q, want 6 digits", code)
		}
		if _, err := strconv.Atoi(code); err != nil {
			t.Fatalf("NewSMSCode() = %q, not digits", code)
		}
		for i := range code {
			if code[i] < '0' || code[i] > '9' {
				t.Fatalf("NewSMSCode() = %q, not digits", code)
			}
			seen[i][code[i]-'0'] = true
		}
	}
	for pos, digits := range seen {
		for d, ok := range digits {
			if !ok {
				t.Errorf("digit %d never appeared at position %d in 2000 codes", d, pos)
			}
		}
	}
}

func TestHashToken(t *testing.T) {
	// SHA-256("abc"), FIPS 180-2 test vector.
	const abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if got := HashToken("abc"); got != abc {
		t.Fatalf("HashToken(abc) = %s, want %s", got, abc)
	}
	tests := []struct {
		name, hash, tok string
		want            bool
	}{
		{"right token", abc, "abc", true},
		{"wrong token", abc, "abd", false},
		{"empty token", abc, "", false},
		{"hash of another case", abc, "ABC", false},
		{"empty hash", "", "abc", false},
		{"token given as hash", abc, abc, false},
	}
	for _, tc := range tests {
		if got := TokenMatches(tc.hash, tc.tok); got != tc.want {
			t.Errorf("%s: TokenMatches(%q, %q) = %v, want %v", tc.name, tc.hash, tc.tok, got, tc.want)
		}
	}
}
