// Package federation authenticates and signs server-to-server requests for
// threepidd: the X-Matrix Authorization header, request signing as Synapse and
// Sydent do it, a cache of identity-server public keys, the verifier for the
// inbound POST /_matrix/federation/v1/3pid/onupdate and its sending side.
package federation

import (
	"errors"
	"fmt"
	"strings"
)

const (
	// xMatrixScheme is the authorization scheme of federation requests.
	xMatrixScheme = "X-Matrix"
	// maxXMatrixLen bounds the header we parse; real ones are ~200 bytes.
	maxXMatrixLen = 4096
	// maxXMatrixParams bounds the number of auth-params, known or not.
	maxXMatrixParams = 8
	// maxXMatrixValue bounds one value: a server name has at most 255
	// characters, key IDs and signatures are far shorter.
	maxXMatrixValue = 255
)

// XMatrix is a parsed X-Matrix Authorization header.
type XMatrix struct {
	Origin, Destination, KeyID, Signature string
}

// ParseXMatrix parses an `X-Matrix origin=..,destination=..,key=..,sig=..`
// Authorization header value (RFC 9110 auth-params). Values may be quoted
// strings (with backslash escapes) or unquoted; parameters are separated by
// commas with optional spaces; names are case-insensitive. origin, key and sig
// are required and non-empty; destination is optional, as the spec asks
// receivers to accept requests from servers that do not send it. Unknown
// parameters are ignored; a repeated parameter, a header over 4 KiB, a value
// over 255 bytes or more than 8 parameters is an error.
func ParseXMatrix(header string) (XMatrix, error) {
	if len(header) > maxXMatrixLen {
		return XMatrix{}, fmt.Errorf("X-Matrix header longer than %d bytes", maxXMatrixLen)
	}
	scheme, params, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, xMatrixScheme) {
		return XMatrix{}, fmt.Errorf("authorization scheme %q is not %s", truncate(scheme, maxQuoted), xMatrixScheme)
	}
	p := paramParser{s: params}
	seen := make(map[string]bool, maxXMatrixParams)
	var x XMatrix
	for {
		name, value, ok, err := p.next()
		if err != nil {
			return XMatrix{}, fmt.Errorf("X-Matrix header: %w", err)
		}
		if !ok {
			break
		}
		if seen[name] {
			return XMatrix{}, fmt.Errorf("X-Matrix header: parameter %q repeated", name)
		}
		if len(seen) == maxXMatrixParams {
			return XMatrix{}, fmt.Errorf("X-Matrix header: more than %d parameters", maxXMatrixParams)
		}
		seen[name] = true
		if value == "" {
			return XMatrix{}, fmt.Errorf("X-Matrix header: parameter %q is empty", name)
		}
		if len(value) > maxXMatrixValue {
			return XMatrix{}, fmt.Errorf("X-Matrix header: parameter %q longer than %d bytes", name, maxXMatrixValue)
		}
		switch name {
		case "origin":
			x.Origin = value
		case "destination":
			x.Destination = value
		case "key":
			x.KeyID = value
		case "sig":
			x.Signature = value
		}
	}
	for _, req := range []struct{ name, value string }{{"origin", x.Origin}, {"key", x.KeyID}, {"sig", x.Signature}} {
		if req.value == "" {
			return XMatrix{}, fmt.Errorf("X-Matrix header: parameter %q missing", req.name)
		}
	}
	return x, nil
}

// String renders the header value with every parameter quoted, and no spaces
// between parameters (Sydent splits the header on spaces). An empty
// Destination is left out.
func (x XMatrix) String() string {
	var b strings.Builder
	b.WriteString(xMatrixScheme + " ")
	writeParam(&b, "origin", x.Origin)
	if x.Destination != "" {
		b.WriteByte(',')
		writeParam(&b, "destination", x.Destination)
	}
	b.WriteByte(',')
	writeParam(&b, "key", x.KeyID)
	b.WriteByte(',')
	writeParam(&b, "sig", x.Signature)
	return b.String()
}

// writeParam writes name="value", escaping quotes and backslashes.
func writeParam(b *strings.Builder, name, value string) {
	b.WriteString(name)
	b.WriteString(`="`)
	for i := 0; i < len(value); i++ {
		if c := value[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(value[i])
	}
	b.WriteByte('"')
}

// paramParser walks a comma-separated list of auth-params.
type paramParser struct {
	s   string
	pos int
}

// next returns the next parameter with its name lower-cased; ok is false at the
// end of the list. Empty list elements (",,") are skipped, as RFC 9110 asks.
func (p *paramParser) next() (name, value string, ok bool, err error) {
	for {
		p.skipSpace()
		if p.pos == len(p.s) {
			return "", "", false, nil
		}
		if p.s[p.pos] != ',' {
			break
		}
		p.pos++
	}
	start := p.pos
	for p.pos < len(p.s) && isTokenChar(p.s[p.pos]) {
		p.pos++
	}
	if p.pos == start {
		return "", "", false, fmt.Errorf("parameter name expected at byte %d", p.pos)
	}
	name = strings.ToLower(p.s[start:p.pos])
	p.skipSpace()
	if p.pos == len(p.s) || p.s[p.pos] != '=' {
		return "", "", false, fmt.Errorf("parameter %q has no value", name)
	}
	p.pos++
	p.skipSpace()
	if p.pos < len(p.s) && p.s[p.pos] == '"' {
		value, err = p.quoted()
	} else {
		value = p.unquoted()
	}
	if err != nil {
		return "", "", false, fmt.Errorf("parameter %q: %w", name, err)
	}
	p.skipSpace()
	if p.pos < len(p.s) && p.s[p.pos] != ',' {
		return "", "", false, fmt.Errorf("parameter %q: unexpected %q after value", name, p.s[p.pos])
	}
	return name, value, true, nil
}

func (p *paramParser) skipSpace() {
	for p.pos < len(p.s) && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
}

// quoted reads a quoted-string starting at the opening quote.
func (p *paramParser) quoted() (string, error) {
	p.pos++ // opening quote
	var b strings.Builder
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		p.pos++
		switch {
		case c == '"':
			return b.String(), nil
		case c == '\\':
			if p.pos == len(p.s) {
				return "", errors.New("unterminated escape")
			}
			c = p.s[p.pos]
			p.pos++
			if !isQuotedChar(c) {
				return "", fmt.Errorf("invalid escaped byte %#x", c)
			}
		case !isQuotedChar(c):
			return "", fmt.Errorf("invalid byte %#x in quoted value", c)
		}
		b.WriteByte(c)
	}
	return "", errors.New("unterminated quoted value")
}

// unquoted reads a bare value: visible ASCII up to a comma, space or the end.
// It is laxer than RFC 9110's token so that Synapse-style values such as
// key=ed25519:abc or a padded base64 signature are accepted unquoted.
func (p *paramParser) unquoted() string {
	start := p.pos
	for p.pos < len(p.s) && isBareChar(p.s[p.pos]) {
		p.pos++
	}
	return p.s[start:p.pos]
}

// isTokenChar reports whether c is an RFC 9110 tchar.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// isQuotedChar reports whether c may appear (possibly escaped) inside a
// quoted-string: tab, space and visible ASCII. obs-text is refused.
func isQuotedChar(c byte) bool {
	return c == '\t' || c >= ' ' && c <= '~'
}

// isBareChar reports whether c may appear in an unquoted value.
func isBareChar(c byte) bool {
	return c > ' ' && c <= '~' && c != ',' && c != '"' && c != '\\'
}

// maxQuoted bounds a value of a request quoted in an error message.
const maxQuoted = 64

// truncate shortens s to at most n bytes (plus "...") for an error message.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
