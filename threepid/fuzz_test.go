package threepid

import (
	"net/url"
	"strings"
	"testing"
)

// The seed corpora are in testdata/fuzz/.

// FuzzCanonicalEmail checks that canonicalisation never panics, that its output
// is a fixed point (canonicalising it again changes nothing, also through
// CanonicalAddress), and that the output keeps exactly one "@".
func FuzzCanonicalEmail(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		out, err := CanonicalEmail(s)
		if err != nil {
			return
		}
		if strings.Count(out, "@") != 1 {
			t.Fatalf("CanonicalEmail(%q) = %q: not exactly one @", s, out)
		}
		again, err := CanonicalEmail(out)
		if err != nil || again != out {
			t.Fatalf("CanonicalEmail(%q) = %q, but that canonicalises to %q, %v", s, out, again, err)
		}
		if viaAddress, err := CanonicalAddress(MediumEmail, out); err != nil || viaAddress != out {
			t.Fatalf("CanonicalAddress(email, %q) = %q, %v", out, viaAddress, err)
		}
	})
}

// FuzzCanonicalMSISDN checks that parsing never panics and that a canonical
// number is stable: it passes CanonicalAddress unchanged, and parsing it back
// in international form yields it again.
func FuzzCanonicalMSISDN(f *testing.F) {
	f.Fuzz(func(t *testing.T, country, number string) {
		out, err := CanonicalMSISDN(country, number)
		if err != nil {
			return
		}
		if viaAddress, err := CanonicalAddress(MediumMSISDN, out); err != nil || viaAddress != out {
			t.Fatalf("CanonicalMSISDN(%q, %q) = %q, but CanonicalAddress gives %q, %v", country, number, out, viaAddress, err)
		}
		again, err := CanonicalMSISDN(country, "+"+out)
		if err != nil || again != out {
			t.Fatalf("CanonicalMSISDN(%q, %q) = %q, but +%s gives %q, %v", country, number, out, out, again, err)
		}
	})
}

// FuzzNextLink checks the next_link parser: a link it accepts has a host
// that the allowlist of exactly that host admits and an empty one refuses,
// and an origin made only of characters a Content-Security-Policy source
// may hold (no separator a link could inject a directive with).
func FuzzNextLink(f *testing.F) {
	f.Fuzz(func(t *testing.T, link string) {
		valid := ValidNextLink(link)
		origin, ok := NextLinkOrigin(link)
		if ok != valid || NextLinkAllowed(link, nil) != valid {
			t.Fatalf("%q: ValidNextLink %v, NextLinkOrigin %v, NextLinkAllowed(nil) %v disagree", link, valid, ok, NextLinkAllowed(link, nil))
		}
		if !valid {
			return
		}
		if NextLinkAllowed(link, []string{}) {
			t.Fatalf("%q allowed by an empty list", link)
		}
		u, err := url.Parse(link)
		if err != nil {
			t.Fatalf("%q: accepted but does not parse: %v", link, err)
		}
		if !NextLinkAllowed(link, []string{strings.ToLower(u.Hostname())}) {
			t.Fatalf("%q: refused by a list of its own host %q", link, u.Hostname())
		}
		if strings.IndexFunc(origin, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune(".-:/[]", r))
		}) >= 0 {
			t.Fatalf("%q: origin %q holds a character a CSP source must not", link, origin)
		}
	})
}
