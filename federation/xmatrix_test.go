package federation

import (
	"strings"
	"testing"
)

func TestParseXMatrix(t *testing.T) {
	full := XMatrix{Origin: "id.example.org", Destination: "example.org", KeyID: "ed25519:0", Signature: "c2lnbmF0dXJl"}
	tests := []struct {
		name   string
		header string
		want   XMatrix
	}{
		{"quoted", `X-Matrix origin="id.example.org",destination="example.org",key="ed25519:0",sig="c2lnbmF0dXJl"`, full},
		{"unquoted", `X-Matrix origin=id.example.org,destination=example.org,key=ed25519:0,sig=c2lnbmF0dXJl`, full},
		{"spaces around commas and equals", "X-Matrix  origin = \"id.example.org\" ,\tdestination=example.org , key=\"ed25519:0\",  sig=c2lnbmF0dXJl  ", full},
		{"other order, destination last (Synapse)", `X-Matrix origin="id.example.org",key="ed25519:0",sig="c2lnbmF0dXJl",destination="example.org"`, full},
		{"case-insensitive scheme and names", `x-matrix ORIGIN="id.example.org",Destination="example.org",Key="ed25519:0",SIG="c2lnbmF0dXJl"`, full},
		{"empty list elements", `X-Matrix ,origin="id.example.org",,destination="example.org",key="ed25519:0",sig="c2lnbmF0dXJl",`, full},
		{"no destination (older servers)", `X-Matrix origin="id.example.org",key="ed25519:0",sig="c2lnbmF0dXJl"`,
			XMatrix{Origin: "id.example.org", KeyID: "ed25519:0", Signature: "c2lnbmF0dXJl"}},
		{"unknown parameter ignored", `X-Matrix origin="id.example.org",future="x",destination="example.org",key="ed25519:0",sig="c2lnbmF0dXJl"`, full},
		{"escapes in quoted values", `X-Matrix origin="a\"b\\c",key="ed25519:0",sig="s i g"`,
			XMatrix{Origin: `a"b\c`, KeyID: "ed25519:0", Signature: "s i g"}},
		{"padded unquoted signature", `X-Matrix origin=o,key=ed25519:0,sig=abc==`, XMatrix{Origin: "o", KeyID: "ed25519:0", Signature: "abc=="}},
		{"port in origin", `X-Matrix origin="id.example.org:8448",key="ed25519:0",sig="x"`, XMatrix{Origin: "id.example.org:8448", KeyID: "ed25519:0", Signature: "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseXMatrix(tt.header)
			if err != nil {
				t.Fatalf("ParseXMatrix: %v", err)
			}
			if got != tt.want {
				t.Errorf("ParseXMatrix = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseXMatrixErrors(t *testing.T) {
	tests := []struct {
		name, header, wantErr string
	}{
		{"empty", "", "scheme"},
		{"bearer", "Bearer abc", `"Bearer" is not X-Matrix`},
		{"scheme only", "X-Matrix", `"origin" missing`},
		{"no sig", `X-Matrix origin="o",key="ed25519:0"`, `"sig" missing`},
		{"no key", `X-Matrix origin="o",sig="s"`, `"key" missing`},
		{"no origin", `X-Matrix key="ed25519:0",sig="s"`, `"origin" missing`},
		{"duplicate origin", `X-Matrix origin="o",origin="p",key="ed25519:0",sig="s"`, `"origin" repeated`},
		{"duplicate in other case", `X-Matrix origin="o",key="ed25519:0",sig="s",SIG="t"`, `"sig" repeated`},
		{"duplicate unknown", `X-Matrix a=1,a=2,origin="o",key="ed25519:0",sig="s"`, `"a" repeated`},
		{"empty value", `X-Matrix origin="",key="ed25519:0",sig="s"`, `"origin" is empty`},
		{"empty bare value", `X-Matrix origin=,key="ed25519:0",sig="s"`, `"origin" is empty`},
		{"no equals", `X-Matrix origin,key="ed25519:0",sig="s"`, "has no value"},
		{"unterminated quote", `X-Matrix origin="o,key="ed25519:0",sig="s`, "unexpected"},
		{"unterminated at end", `X-Matrix origin="o`, "unterminated quoted value"},
		{"dangling escape", `X-Matrix origin="o\`, "unterminated escape"},
		{"junk after value", `X-Matrix origin="o" x,key="ed25519:0",sig="s"`, "unexpected"},
		{"space inside bare value", `X-Matrix origin=a b,key="ed25519:0",sig="s"`, "unexpected"},
		{"control byte", "X-Matrix origin=\"o\x01\",key=\"ed25519:0\",sig=\"s\"", "invalid byte"},
		{"non-ASCII", `X-Matrix origin="ö",key="ed25519:0",sig="s"`, "invalid byte"},
		{"bad name", `X-Matrix "origin"="o"`, "parameter name expected"},
		{"too many params", `X-Matrix a=1,b=2,c=3,d=4,e=5,origin="o",key="ed25519:0",sig="s",z=1`, "more than 8"},
		{"too long", `X-Matrix origin="o",key="ed25519:0",sig="s",x="` + strings.Repeat("a", maxXMatrixLen) + `"`, "longer than 4096"},
		{"value too long", `X-Matrix origin="` + strings.Repeat("a", maxXMatrixValue+1) + `",key="ed25519:0",sig="s"`, "longer than 255"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, err := ParseXMatrix(tt.header)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseXMatrix = %+v, %v; want error containing %q", x, err, tt.wantErr)
			}
		})
	}
}

func TestXMatrixString(t *testing.T) {
	tests := []struct {
		x    XMatrix
		want string
	}{
		{XMatrix{Origin: "hs.example", Destination: "id.example", KeyID: "ed25519:a_b", Signature: "c2ln"},
			`X-Matrix origin="hs.example",destination="id.example",key="ed25519:a_b",sig="c2ln"`},
		{XMatrix{Origin: "hs.example", KeyID: "ed25519:0", Signature: "c2ln"},
			`X-Matrix origin="hs.example",key="ed25519:0",sig="c2ln"`},
		{XMatrix{Origin: `q"b\s`, KeyID: "ed25519:0", Signature: "s"},
			`X-Matrix origin="q\"b\\s",key="ed25519:0",sig="s"`},
	}
	for _, tt := range tests {
		if got := tt.x.String(); got != tt.want {
			t.Errorf("String() = %s, want %s", got, tt.want)
		}
		if back, err := ParseXMatrix(tt.want); err != nil || back != tt.x {
			t.Errorf("ParseXMatrix(%s) = %+v, %v; want %+v", tt.want, back, err, tt.x)
		}
	}
}

// FuzzParseXMatrix checks that parsing never panics and that whatever parses
// renders with String to a header that parses back to the same value. Its
// seed corpus is testdata/fuzz/FuzzParseXMatrix.
func FuzzParseXMatrix(f *testing.F) {
	f.Fuzz(func(t *testing.T, header string) {
		x, err := ParseXMatrix(header)
		if err != nil {
			return
		}
		if x.Origin == "" || x.KeyID == "" || x.Signature == "" {
			t.Fatalf("ParseXMatrix(%q) = %+v without error", header, x)
		}
		s := x.String()
		back, err := ParseXMatrix(s)
		if err != nil {
			t.Fatalf("ParseXMatrix(String()) of %q: %v (String() = %q)", header, err, s)
		}
		if back != x {
			t.Fatalf("round trip of %q: %+v, want %+v", header, back, x)
		}
	})
}
