// Package threepid holds the domain rules for third-party identifiers (3PIDs):
// media, the canonical forms of e-mail addresses and phone numbers (as Synapse
// computes them, so imported data keeps matching), the syntax of client secrets,
// session ids, user IDs and server names, and the tokens sent to prove ownership.
package threepid

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"
	"golang.org/x/text/cases"
	"golang.org/x/text/language"
)

// The media threepidd supports.
const (
	// MediumEmail is the medium of e-mail addresses.
	MediumEmail = "email"
	// MediumMSISDN is the medium of phone numbers, stored as E.164 digits without "+".
	MediumMSISDN = "msisdn"
)

// The values of id_server_unbind_result (the spec's, MSC1915): whether the
// identity servers removed a binding too.
const (
	// UnbindSuccess: every identity server concerned removed it.
	UnbindSuccess = "success"
	// UnbindNoSupport: nothing was unbound, or not everywhere (yet).
	UnbindNoSupport = "no-support"
)

// ErrInvalidAddress is wrapped by every error about an address that cannot be
// canonicalised; the wrapping error says why.
var ErrInvalidAddress = errors.New("invalid address")

// Synapse's bounds on a canonical e-mail address, in code points
// (synapse/util/threepids.py, MAX_EMAIL_ADDRESS_LENGTH).
const (
	minEmailLength = 3
	maxEmailLength = 500
)

// maxMSISDNDigits bounds a canonical phone number: a country code of up to 3
// digits and a national number of up to 17, the most libphonenumber parses.
const maxMSISDNDigits = 20

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidAddress, fmt.Sprintf(format, args...))
}

// CanonicalEmail returns the canonical form of an e-mail address exactly as
// Synapse's canonicalise_email and validate_email compute it: surrounding
// whitespace trimmed, exactly one "@", the local part case-folded, the domain
// lower-cased, 3 to 500 code points in all. There is deliberately no stricter
// syntax check, so that addresses a homeserver already holds stay valid.
//
// Strings that are not valid UTF-8 or contain NUL are rejected: a JSON body
// cannot carry the former and neither database can store the latter.
func CanonicalEmail(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", invalid("not valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return "", invalid("contains NUL")
	}
	s = strings.TrimFunc(s, isPythonSpace)
	local, domain, ok := strings.Cut(s, "@")
	if !ok || strings.Contains(domain, "@") {
		return "", invalid("an e-mail address must contain exactly one @")
	}
	// Casers carry state and must not be shared between goroutines.
	out := foldCase(local) + "@" + cases.Lower(language.Und).String(domain)
	if n := utf8.RuneCountInString(out); n < minEmailLength || n > maxEmailLength {
		return "", invalid("an e-mail address must be %d to %d characters long", minEmailLength, maxEmailLength)
	}
	return out, nil
}

// MailableEmail reports whether a canonical e-mail address (from
// [CanonicalEmail]) is a bare addr-spec that a message can be sent to exactly:
// net/mail parses it to itself, without a display name, angle brackets,
// comments, quoting or white space. CanonicalEmail deliberately accepts more,
// so that addresses a homeserver already holds keep matching; requestToken,
// which mails a token to a new address, also requires this, so that a client
// mistake is refused up front (not reported as a mail failure) and the address
// validated is the one the token was sent to.
func MailableEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Name == "" && a.Address == s
}

// foldCase is Python's str.casefold: Unicode full case folding. x/text's
// Fold differs in one place: it folds upper-case Cherokee letters to lower
// case (golang/go#46101), whereas Unicode folds Cherokee to upper case, so
// lower-case Cherokee in its output is turned back to upper case.
func foldCase(s string) string {
	return strings.Map(upperCherokee, cases.Fold().String(s))
}

// upperCherokee maps the lower-case Cherokee letters (U+AB70..U+ABBF,
// U+13F8..U+13FD) to their upper-case forms (U+13A0..U+13EF, U+13F0..U+13F5).
func upperCherokee(r rune) rune {
	switch {
	case r >= 0xab70 && r <= 0xabbf:
		return r - 0xab70 + 0x13a0
	case r >= 0x13f8 && r <= 0x13fd:
		return r - 0x13f8 + 0x13f0
	}
	return r
}

// isPythonSpace reports whether Python's str.strip() removes r: Unicode white
// space plus the information separators U+001C..U+001F.
func isPythonSpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
}

// CanonicalMSISDN turns a phone number as a client sends it (a two-letter
// country code for numbers without "+", and the number as typed) into E.164
// digits without the leading "+", as Synapse's phone_number_to_msisdn does.
// Unlike Synapse it refuses the rare input whose E.164 form does not parse
// back to itself, so that the result is always a fixed point.
func CanonicalMSISDN(country, number string) (string, error) {
	if !isCountryCode(country) {
		return "", invalid("country must be two upper-case letters")
	}
	e164, err := parseE164(number, country)
	if err != nil {
		return "", err
	}
	// libphonenumber turns some degenerate inputs (runs of zeros) into E.164
	// strings that parse back to another number. A canonical form must be
	// stable, so those are refused.
	if again, err := parseE164(e164, country); err != nil || again != e164 {
		return "", invalid("phone number %s is not stable under parsing", e164)
	}
	return strings.TrimPrefix(e164, "+"), nil
}

// InternationalFormat renders a canonical phone number (E.164 digits without
// "+") as people write it internationally ("447700900123" → "+44 7700 900123"),
// as identity servers answer it in intl_fmt; "+" and the digits if it does not
// parse.
func InternationalFormat(msisdn string) string {
	n, err := phonenumbers.Parse("+"+msisdn, "")
	if err != nil {
		return "+" + msisdn
	}
	return phonenumbers.Format(n, phonenumbers.INTERNATIONAL)
}

// parseE164 parses a phone number as libphonenumber does for Synapse and
// formats it as E.164 with its "+".
func parseE164(number, country string) (string, error) {
	n, err := phonenumbers.Parse(number, country)
	if err != nil {
		return "", invalid("unable to parse phone number: %v", err)
	}
	return phonenumbers.Format(n, phonenumbers.E164), nil
}

func isCountryCode(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

// CanonicalAddress canonicalises an address a client names in an existing
// association (delete, unbind) or an identity server names in onupdate. An
// e-mail address goes through [CanonicalEmail]; a phone number must already be
// E.164 digits, optionally after a "+", which is dropped.
func CanonicalAddress(medium, address string) (string, error) {
	switch medium {
	case MediumEmail:
		return CanonicalEmail(address)
	case MediumMSISDN:
		digits, ok := msisdnDigits(address)
		if !ok || len(digits) > maxMSISDNDigits {
			return "", invalid("a phone number must be 1 to %d digits, optionally after +", maxMSISDNDigits)
		}
		return digits, nil
	default:
		return "", invalid("unknown medium %q", medium)
	}
}

// InferMedium guesses the medium of an address that arrived without one: an
// address with "@" is an e-mail address, digits (optionally after "+") are a
// phone number, and anything else is "".
func InferMedium(address string) string {
	if strings.Contains(address, "@") {
		return MediumEmail
	}
	if _, ok := msisdnDigits(address); ok {
		return MediumMSISDN
	}
	return ""
}

// msisdnDigits strips an optional leading "+" and reports whether what remains
// is a non-empty string of ASCII digits.
func msisdnDigits(s string) (string, bool) {
	s = strings.TrimPrefix(s, "+")
	if s == "" {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return "", false
		}
	}
	return s, true
}
