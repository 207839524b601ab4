package threepid

import (
	"errors"
	"strings"
	"testing"
)

func TestCanonicalEmail(t *testing.T) {
	// Expectations computed with Synapse's canonicalise_email + validate_email
	// (Python str.strip, str.casefold, str.lower).
	tests := []struct {
		name, in, want string
	}{
		{"lower-cases the domain, folds the local part", "Foo.Bar@Example.COM", "foo.bar@example.com"},
		{"trims ASCII whitespace", "  x@y.z \t\n", "x@y.z"},
		{"trims Python's extra separators", "\x1c a@b \x1f", "a@b"},
		{"trims Unicode spaces", "\u00a0a@b\u3000", "a@b"},
		{"capital sharp s folds to ss, domain lower-cases to ß", "ẞtraße@STRAẞE.de", "sstrasse@straße.de"},
		{"dotted capital I keeps its dot", "İstanbul@İSTANBUL.tr", "i\u0307stanbul@i\u0307stanbul.tr"},
		{"sigma folds to σ; lower-casing keeps final ς", "ΑΣ@ΑΣ", "ασ@ας"},
		{"sigma before a dot is not final", "ΣΑΣ@ΣΑΣ.gr", "σασ@σασ.gr"},
		{"ligature expands", "ﬃ@X.org", "ffi@x.org"},
		{"Kelvin sign", "\u212a@\u212a.com", "k@k.com"},
		{"micro sign folds to mu but only lower-cases in the domain", "µ@µ.com", "μ@µ.com"},
		{"Cherokee folds to upper case", "ᏸ@Ᏸ.com", "Ᏸ@ᏸ.com"},
		{"upper-case Cherokee is its own fold", "Ꭰꭰ@ꭰ.com", "ᎠᎠ@ꭰ.com"},
		{"no syntax beyond one @: empty local part", "@ab", "@ab"},
		{"no syntax beyond one @: spaces inside", "a b@c d", "a b@c d"},
		{"shortest", "a@b", "a@b"},
		{"longest", strings.Repeat("a", 498) + "@b", strings.Repeat("a", 498) + "@b"},
		{"length counts code points, not bytes", strings.Repeat("é", 498) + "@b", strings.Repeat("é", 498) + "@b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CanonicalEmail(tc.in)
			if err != nil {
				t.Fatalf("CanonicalEmail(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Errorf("CanonicalEmail(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestMailableEmail(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"alice@example.org", true},
		{"a@b", true},
		{"ünïcödé@exämple.org", true},
		{"sstrasse@straße.de", true},
		{"lit@[192.0.2.1]", true},
		{"first.last+tag@example.org", true},
		{"a b@example.org", false},
		{"a\r\nb@example.org", false},
		{"a\r\nbcc: evil@example.org", false},
		{"name <named@example.org>", false},
		{"<angle@example.org>", false},
		{"a(comment)@example.org", false},
		{`"quoted local"@example.org`, false},
		{"ab@", false},
		{"@ab", false},
		{"a..b@example.org", false},
		{"a@b c", false},
	} {
		if got := MailableEmail(tc.in); got != tc.want {
			t.Errorf("MailableEmail(%q) = %t, want %t", tc.in, got, tc.want)
		}
	}
}

func TestCanonicalEmailRejects(t *testing.T) {
	tests := []struct {
		name, in string
	}{
		{"empty", ""},
		{"whitespace only", " \t "},
		{"no @", "example.org"},
		{"two @", "a@b@example.org"},
		{"adjacent @", "a@@example.org"},
		{"too short", "a@"},
		{"too short after trimming", " @b "},
		{"too long", strings.Repeat("a", 499) + "@b"},
		{"too long after folding", strings.Repeat("ß", 250) + "@b"},
		{"invalid UTF-8", "a\xff@example.org"},
		{"NUL", "a\x00b@example.org"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CanonicalEmail(tc.in)
			if !errors.Is(err, ErrInvalidAddress) {
				t.Fatalf("CanonicalEmail(%q) = %q, %v; want ErrInvalidAddress", tc.in, got, err)
			}
		})
	}
}

func TestCanonicalMSISDN(t *testing.T) {
	tests := []struct {
		name, country, number, want string
	}{
		{"GB national", "GB", "07700 900123", "447700900123"},
		{"GB with punctuation", "GB", "(020) 7946-0018", "442079460018"},
		{"US national", "US", "(415) 555-0132", "14155550132"},
		{"US with trunk prefix", "US", "1 415 555 0132", "14155550132"},
		{"leading + overrides the country", "US", "+44 7700 900123", "447700900123"},
		{"international prefix of the country", "GB", "00 1 415 555 0132", "14155550132"},
		{"unknown country with +", "XX", "+447700900123", "447700900123"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CanonicalMSISDN(tc.country, tc.number)
			if err != nil {
				t.Fatalf("CanonicalMSISDN(%q, %q): %v", tc.country, tc.number, err)
			}
			if got != tc.want {
				t.Errorf("CanonicalMSISDN(%q, %q) = %q, want %q", tc.country, tc.number, got, tc.want)
			}
		})
	}
}

func TestCanonicalMSISDNRejects(t *testing.T) {
	tests := []struct {
		name, country, number string
	}{
		{"lower-case country", "gb", "07700 900123"},
		{"three-letter country", "GBR", "07700 900123"},
		{"empty country", "", "+447700900123"},
		{"digits as country", "44", "07700 900123"},
		{"garbage", "GB", "not a number"},
		{"empty number", "GB", ""},
		{"unknown country without +", "XX", "07700 900123"},
		{"too short", "GB", "1"},
		{"too long", "GB", "+44" + strings.Repeat("1", 30)},
		{"zeros whose E.164 form is another number", "GB", "000000000000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CanonicalMSISDN(tc.country, tc.number)
			if !errors.Is(err, ErrInvalidAddress) {
				t.Fatalf("CanonicalMSISDN(%q, %q) = %q, %v; want ErrInvalidAddress", tc.country, tc.number, got, err)
			}
		})
	}
}

func TestCanonicalAddress(t *testing.T) {
	tests := []struct {
		name, medium, address, want string
		wantErr                     bool
	}{
		{"email is canonicalised", MediumEmail, " Alice@Example.ORG ", "alice@example.org", false},
		{"email with two @", MediumEmail, "a@b@c", "", true},
		{"msisdn digits", MediumMSISDN, "447700900123", "447700900123", false},
		{"msisdn leading + dropped", MediumMSISDN, "+447700900123", "447700900123", false},
		{"msisdn 20 digits", MediumMSISDN, strings.Repeat("1", 20), strings.Repeat("1", 20), false},
		{"msisdn 21 digits", MediumMSISDN, strings.Repeat("1", 21), "", true},
		{"msisdn only +", MediumMSISDN, "+", "", true},
		{"msisdn empty", MediumMSISDN, "", "", true},
		{"msisdn two +", MediumMSISDN, "++44", "", true},
		{"msisdn spaces", MediumMSISDN, "44 7700 900123", "", true},
		{"msisdn non-ASCII digits", MediumMSISDN, "٤٤", "", true},
		{"unknown medium", "fax", "123", "", true},
		{"empty medium", "", "a@b.c", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CanonicalAddress(tc.medium, tc.address)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidAddress) {
					t.Fatalf("CanonicalAddress(%q, %q) = %q, %v; want ErrInvalidAddress", tc.medium, tc.address, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("CanonicalAddress(%q, %q) = %q, %v; want %q", tc.medium, tc.address, got, err, tc.want)
			}
		})
	}
}

func TestInferMedium(t *testing.T) {
	tests := []struct{ address, want string }{
		{"alice@example.org", MediumEmail},
		{"@", MediumEmail},
		{"447700900123", MediumMSISDN},
		{"+447700900123", MediumMSISDN},
		{"+", ""},
		{"", ""},
		{"44 7700", ""},
		{"alice", ""},
		{"12a", ""},
	}
	for _, tc := range tests {
		if got := InferMedium(tc.address); got != tc.want {
			t.Errorf("InferMedium(%q) = %q, want %q", tc.address, got, tc.want)
		}
	}
}

func TestInternationalFormat(t *testing.T) {
	for msisdn, want := range map[string]string{
		"447700900123": "+44 7700 900123",
		"14155552671":  "+1 415-555-2671",
		"33612345678":  "+33 6 12 34 56 78",
		"999":          "+999",
	} {
		if got := InternationalFormat(msisdn); got != want {
			t.Errorf("InternationalFormat(%q) = %q, want %q", msisdn, got, want)
		}
	}
}
