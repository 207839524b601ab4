package sync

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/threepidd/threepidd/mxerr"
)

// tokenPrefix starts every composite token. No homeserver issues tokens that
// start with it (Synapse: "s…"/"m…", Dendrite: "s…", Conduit: digits), so a
// token without it is a plain upstream token.
const tokenPrefix = "tpd1."

// maxPosDigits bounds the position part (int64 has 19 digits; 18 never overflow).
const maxPosDigits = 18

// ErrInvalidToken is returned for a token that carries our prefix but is not
// one we could have issued: a client bug or a mangled copy. It is 400
// M_INVALID_PARAM, never a server error.
var ErrInvalidToken = mxerr.InvalidParam.WithMessage("The sync token is malformed")

// tokenEncoding encodes the upstream part: any bytes, URL-safe, no padding.
var tokenEncoding = base64.RawURLEncoding.Strict()

// Token is a sync stream token as clients see it: the homeserver's token with
// our notification-stream position appended. Its string form is
//
//	tpd1.<position>.<base64url(upstream token)>
//
// which uses only URL-unreserved characters, so it survives query strings
// unescaped, and carries any upstream token, whatever its characters.
type Token struct {
	// Upstream is the homeserver's token ("" when the client sent none).
	Upstream string
	// Pos is our stream position: the client has seen every notification up
	// to and including it. Meaningful only when HasPos is true.
	Pos int64
	// HasPos is false for an absent token and for a plain upstream token.
	HasPos bool
}

// NewToken returns the composite token of an upstream token and a position.
func NewToken(upstream string, pos int64) Token {
	return Token{Upstream: upstream, Pos: pos, HasPos: true}
}

// ParseToken splits a since/pos/from/to parameter. An empty string is the
// zero Token (a first sync); a token without our prefix is a plain upstream
// token (HasPos false: the client has not synced through threepidd yet, so its
// position is "now"); a token with our prefix that does not decode is
// [ErrInvalidToken].
func ParseToken(s string) (Token, error) {
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok {
		return Token{Upstream: s}, nil
	}
	digits, encoded, ok := strings.Cut(rest, ".")
	if !ok || !validPosition(digits) {
		return Token{}, ErrInvalidToken
	}
	pos, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return Token{}, ErrInvalidToken
	}
	upstream, err := tokenEncoding.DecodeString(encoded)
	if err != nil || strings.ContainsAny(encoded, "\r\n") { // the decoder skips newlines
		return Token{}, ErrInvalidToken
	}
	return NewToken(string(upstream), pos), nil
}

// validPosition accepts canonical decimal numbers: digits only, no sign, no
// leading zero, short enough not to overflow.
func validPosition(s string) bool {
	if s == "" || len(s) > maxPosDigits || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String returns the token as clients see it: the composite form when it has
// a position, else the upstream token unchanged.
func (t Token) String() string {
	if !t.HasPos {
		return t.Upstream
	}
	return string(t.AppendTo(nil))
}

// AppendTo appends the composite form of t (position included even when
// HasPos is false) to dst. Its characters never need JSON or URL escaping.
func (t Token) AppendTo(dst []byte) []byte {
	dst = append(dst, tokenPrefix...)
	dst = strconv.AppendInt(dst, t.Pos, 10)
	dst = append(dst, '.')
	return tokenEncoding.AppendEncode(dst, []byte(t.Upstream))
}
