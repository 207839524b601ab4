package sync

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestSpliceSync(t *testing.T) {
	sec := Section{"a@example.org": {Deleted: false, MXID: "@b:hs", Medium: "email"}}
	const secJSON = `{"a@example.org":{"deleted":false,"mxid":"@b:hs","medium":"email"}}`
	tok := func(up string) string { return `"` + NewToken(up, 7).String() + `"` }
	tests := []struct {
		name      string
		body, sec string // sec "" means no section
		want      string
	}{
		{"token first", `{"next_batch":"s1","rooms":{"join":{}}}`, secJSON,
			`{"next_batch":` + tok("s1") + `,"rooms":{"join":{}},"threepids":` + secJSON + `}`},
		{"token last, pretty", "{\n  \"rooms\": {\"next_batch\": \"nested\"},\n  \"next_batch\": \"s\\u0031\"\n}\n", secJSON,
			"{\n  \"rooms\": {\"next_batch\": \"nested\"},\n  \"next_batch\": " + tok("s1") + "\n,\"threepids\":" + secJSON + "}\n"},
		{"no section", `{"next_batch":"s1","rooms":{}}`, "",
			`{"next_batch":` + tok("s1") + `,"rooms":{}}`},
		{"threepids replaced", `{"threepids":{"old":1},"next_batch":"s1"}`, secJSON,
			`{"threepids":` + secJSON + `,"next_batch":` + tok("s1") + `}`},
		{"leading space", ` {"next_batch":"s1"}`, secJSON,
			` {"next_batch":` + tok("s1") + `,"threepids":` + secJSON + `}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Section(nil)
			if tt.sec != "" {
				s = sec
			}
			got, err := SpliceSync([]byte(tt.body), s, 7)
			if err != nil {
				t.Fatal(err)
			}
			if string(got.Bytes()) != tt.want || got.Len() != len(tt.want) {
				t.Fatalf("got  %s (len %d)\nwant %s", got.Bytes(), got.Len(), tt.want)
			}
			var buf bytes.Buffer
			if n, err := got.WriteTo(&buf); err != nil || n != int64(len(tt.want)) || buf.String() != tt.want {
				t.Fatalf("WriteTo wrote %d bytes (%v): %s", n, err, buf.Bytes())
			}
			if !json.Valid(got.Bytes()) {
				t.Fatalf("invalid JSON: %s", got.Bytes())
			}
		})
	}
}

func TestSpliceSlidingSync(t *testing.T) {
	sec := Section{"+44700": {Deleted: true, MXID: "@a:hs", Medium: "msisdn"}}
	const secJSON = `{"+44700":{"deleted":true,"mxid":"@a:hs","medium":"msisdn"}}`
	pos := `"` + NewToken("5/s1", 3).String() + `"`
	tests := []struct{ name, body, want string }{
		{"no extensions", `{"pos":"5/s1","lists":{}}`,
			`{"pos":` + pos + `,"lists":{},"extensions":{"threepids":` + secJSON + `}}`},
		{"empty extensions", `{"extensions":{ },"pos":"5/s1"}`,
			`{"extensions":{ "threepids":` + secJSON + `},"pos":` + pos + `}`},
		{"other extensions", `{"pos":"5/s1","extensions":{"e2ee":{"device_lists":{}}}}`,
			`{"pos":` + pos + `,"extensions":{"e2ee":{"device_lists":{}},"threepids":` + secJSON + `}}`},
		{"threepids replaced", `{"pos":"5/s1","extensions":{"threepids":null}}`,
			`{"pos":` + pos + `,"extensions":{"threepids":` + secJSON + `}}`},
		{"extensions not an object", `{"pos":"5/s1","extensions":null}`,
			`{"pos":` + pos + `,"extensions":{"threepids":` + secJSON + `}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SpliceSlidingSync([]byte(tt.body), sec, 3)
			if err != nil {
				t.Fatal(err)
			}
			if string(got.Bytes()) != tt.want {
				t.Fatalf("got  %s\nwant %s", got.Bytes(), tt.want)
			}
		})
	}
}

func TestSpliceRefuses(t *testing.T) {
	tests := []struct {
		body string
		want error
	}{
		{``, ErrNotObject},
		{`[]`, ErrNotObject},
		{`"next_batch"`, ErrNotObject},
		{`{"next_batch":"s1"`, ErrNotObject},
		{`{}`, ErrNoToken},
		{`{"next_batch":5}`, ErrNoToken},
		{`{"rooms":{"next_batch":"s1"}}`, ErrNoToken},
	}
	for _, tt := range tests {
		if _, err := SpliceSync([]byte(tt.body), Section{"a": {}}, 1); !errors.Is(err, tt.want) {
			t.Errorf("SpliceSync(%q) error %v, want %v", tt.body, err, tt.want)
		}
	}
}

// TestSpliceKeepsBody checks that a large body is referenced, not copied.
func TestSpliceKeepsBody(t *testing.T) {
	body := []byte(`{"next_batch":"s1","pad":"` + strings.Repeat("x", 1<<20) + `"}`)
	got, err := SpliceSync(body, Section{"a@b": {Medium: "email"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	var shared bool
	for _, p := range got.pieces {
		if len(p) > 1<<19 && &p[0] == &body[len(body)-len(p)-1] {
			shared = true
		}
	}
	if !shared {
		t.Fatal("the body's large tail was copied")
	}
}
