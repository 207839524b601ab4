package sync

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/threepidd/threepidd/mxerr"
)

func TestTokenRoundTrip(t *testing.T) {
	upstreams := []string{
		"",
		"s72594_4483_1934_0_0_0_0_0_0_0",  // Synapse
		"m1234~1.5678_34~x.0",             // Synapse multi-writer, with ~ and .
		"5/s1_2",                          // Synapse sliding sync pos
		"tpd1.5.YWJj",                     // looks like ours
		"a&b=c d%20e+f#g?h\x00\xff\n\"\\", // query, JSON and control characters
		"日本語",
		strings.Repeat("x", 4096),
	}
	for _, up := range upstreams {
		for _, pos := range []int64{0, 1, 9_223_372_036_854_775} {
			tok := NewToken(up, pos)
			s := tok.String()
			if url.QueryEscape(s) != s {
				t.Errorf("%q: token %q needs URL escaping", up, s)
			}
			got, err := ParseToken(s)
			if err != nil || got != tok {
				t.Errorf("ParseToken(%q) = %+v, %v; want %+v", s, got, err, tok)
			}
		}
	}
}

func TestParseTokenPlain(t *testing.T) {
	for _, s := range []string{"", "s72594_4483_1934", "tpd1", "tpd2.5.YWJj", "TPD1.5.YWJj", "12345"} {
		got, err := ParseToken(s)
		if err != nil || got != (Token{Upstream: s}) {
			t.Errorf("ParseToken(%q) = %+v, %v; want a plain token", s, got, err)
		}
		if got.String() != s {
			t.Errorf("plain token %q prints as %q", s, got.String())
		}
	}
}

func TestParseTokenGarbled(t *testing.T) {
	for _, s := range []string{
		"tpd1.",                         // nothing
		"tpd1.5",                        // no upstream part separator
		"tpd1..YWJj",                    // no position
		"tpd1.-5.YWJj",                  // negative
		"tpd1.+5.YWJj",                  // sign
		"tpd1.05.YWJj",                  // leading zero
		"tpd1.5x.YWJj",                  // not a number
		"tpd1.1234567890123456789.YWJj", // too long
		"tpd1.5.YW Jj",                  // not base64url
		"tpd1.5.YWJj=",                  // padded
		"tpd1.5.YWJk.more",              // '.' is not base64url
		"tpd1.5.YWJ",                    // truncated (non-zero trailing bits)
		"tpd1.5.a",                      // impossible length
		"tpd1.5.YW\nJj",                 // newlines, which base64 decoders skip
	} {
		_, err := ParseToken(s)
		var me *mxerr.Error
		if !errors.As(err, &me) || me.Status != 400 || me.ErrCode != "M_INVALID_PARAM" {
			t.Errorf("ParseToken(%q) error = %v; want 400 M_INVALID_PARAM", s, err)
		}
	}
}

func FuzzToken(f *testing.F) {
	f.Add("s1_2", int64(5))
	f.Add("", int64(0))
	f.Add("tpd1.3.YWJj", int64(3))
	f.Fuzz(func(t *testing.T, s string, pos int64) {
		// Any string parses or is refused as 400; none panics.
		if tok, err := ParseToken(s); err == nil && tok.HasPos {
			if tok.String() != s {
				t.Fatalf("ParseToken(%q) does not print back: %q", s, tok.String())
			}
		} else if err != nil && !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("ParseToken(%q) error %v", s, err)
		}
		if pos < 0 {
			return
		}
		tok := NewToken(s, pos)
		got, err := ParseToken(tok.String())
		if err != nil || got != tok {
			t.Fatalf("round trip of %+v: %+v, %v", tok, got, err)
		}
	})
}
