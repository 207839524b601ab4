package onupdate_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/onupdate"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    onupdate.Update
		errcode string // "" when Parse must succeed
	}{
		{"deletion", `{"threepid":"alice@example.org","deleted":true,"mxid":"@alice:hs.test"}`,
			onupdate.Update{Medium: "email", Address: "alice@example.org", Deleted: true, MXID: "@alice:hs.test"}, ""},
		{"deletion without mxid", `{"threepid":"alice@example.org","deleted":true}`,
			onupdate.Update{Medium: "email", Address: "alice@example.org", Deleted: true}, ""},
		{"deletion, mxid null", `{"threepid":"alice@example.org","deleted":true,"mxid":null}`,
			onupdate.Update{Medium: "email", Address: "alice@example.org", Deleted: true}, ""},
		{"deletion, mxid empty", `{"threepid":"alice@example.org","deleted":true,"mxid":""}`,
			onupdate.Update{Medium: "email", Address: "alice@example.org", Deleted: true}, ""},
		{"takeover", `{"threepid":"alice@example.org","deleted":false,"mxid":"@bob:other.tld"}`,
			onupdate.Update{Medium: "email", Address: "alice@example.org", MXID: "@bob:other.tld"}, ""},
		{"canonical e-mail", `{"threepid":"  Alice@Example.ORG ","deleted":false,"mxid":"@bob:other.tld"}`,
			onupdate.Update{Medium: "email", Address: "alice@example.org", MXID: "@bob:other.tld"}, ""},
		{"msisdn inferred, + dropped", `{"threepid":"+447700900123","deleted":true}`,
			onupdate.Update{Medium: "msisdn", Address: "447700900123", Deleted: true}, ""},
		{"medium given", `{"threepid":"447700900123","medium":"msisdn","deleted":false,"mxid":"@b:[::1]:8448"}`,
			onupdate.Update{Medium: "msisdn", Address: "447700900123", MXID: "@b:[::1]:8448"}, ""},
		{"unknown fields ignored", `{"threepid":"a@b.c","deleted":true,"x":{"y":[]}}`,
			onupdate.Update{Medium: "email", Address: "a@b.c", Deleted: true}, ""},
		{"ts", `{"threepid":"a@b.c","deleted":false,"mxid":"@b:c.d","ts":1767225600000}`,
			onupdate.Update{Medium: "email", Address: "a@b.c", MXID: "@b:c.d", TS: 1767225600000}, ""},
		{"ts null is absent", `{"threepid":"a@b.c","deleted":true,"ts":null}`,
			onupdate.Update{Medium: "email", Address: "a@b.c", Deleted: true}, ""},
		{"ts 0", `{"threepid":"a@b.c","deleted":true,"ts":0}`, onupdate.Update{}, "M_INVALID_PARAM"},
		{"ts negative", `{"threepid":"a@b.c","deleted":true,"ts":-5}`, onupdate.Update{}, "M_INVALID_PARAM"},
		{"ts a string", `{"threepid":"a@b.c","deleted":true,"ts":"1767225600000"}`, onupdate.Update{}, "M_BAD_JSON"},
		{"ts a fraction", `{"threepid":"a@b.c","deleted":true,"ts":1767225600000.5}`, onupdate.Update{}, "M_BAD_JSON"},
		{"ts beyond int64", `{"threepid":"a@b.c","deleted":true,"ts":99999999999999999999}`, onupdate.Update{}, "M_BAD_JSON"},

		{"not JSON", `threepid=a@b.c`, onupdate.Update{}, "M_NOT_JSON"},
		{"empty", ``, onupdate.Update{}, "M_NOT_JSON"},
		{"array", `[{"threepid":"a@b.c","deleted":true}]`, onupdate.Update{}, "M_BAD_JSON"},
		{"threepid missing", `{"deleted":true}`, onupdate.Update{}, "M_MISSING_PARAM"},
		{"deleted missing", `{"threepid":"a@b.c","mxid":"@b:other.tld"}`, onupdate.Update{}, "M_MISSING_PARAM"},
		{"deleted null", `{"threepid":"a@b.c","deleted":null,"mxid":"@b:other.tld"}`, onupdate.Update{}, "M_MISSING_PARAM"},
		{"deleted a string", `{"threepid":"a@b.c","deleted":"true","mxid":"@b:other.tld"}`, onupdate.Update{}, "M_BAD_JSON"},
		{"threepid a number", `{"threepid":447700900123,"deleted":true}`, onupdate.Update{}, "M_BAD_JSON"},
		{"takeover without mxid", `{"threepid":"a@b.c","deleted":false}`, onupdate.Update{}, "M_MISSING_PARAM"},
		{"takeover, mxid empty", `{"threepid":"a@b.c","deleted":false,"mxid":""}`, onupdate.Update{}, "M_INVALID_PARAM"},
		{"mxid malformed", `{"threepid":"a@b.c","deleted":false,"mxid":"bob"}`, onupdate.Update{}, "M_INVALID_PARAM"},
		{"mxid malformed in a deletion", `{"threepid":"a@b.c","deleted":true,"mxid":"@bob"}`, onupdate.Update{}, "M_INVALID_PARAM"},
		{"unknown medium", `{"threepid":"a@b.c","medium":"fax","deleted":true}`, onupdate.Update{}, "M_INVALID_PARAM"},
		{"medium does not fit", `{"threepid":"447700900123","medium":"email","deleted":true}`, onupdate.Update{}, "M_INVALID_PARAM"},
		{"medium cannot be inferred", `{"threepid":"call me","deleted":true}`, onupdate.Update{}, "M_INVALID_PARAM"},
		{"threepid empty", `{"threepid":" ","deleted":true}`, onupdate.Update{}, "M_INVALID_PARAM"},
		{"two @", `{"threepid":"a@b@c","deleted":true}`, onupdate.Update{}, "M_INVALID_PARAM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := onupdate.Parse([]byte(tt.body))
			if tt.errcode == "" {
				if err != nil || got != tt.want {
					t.Fatalf("Parse = %+v, %v; want %+v", got, err, tt.want)
				}
				return
			}
			var me *mxerr.Error
			if !errors.As(err, &me) || me.ErrCode != tt.errcode || me.Status != http.StatusBadRequest {
				t.Fatalf("Parse = %+v, %v; want 400 %s", got, err, tt.errcode)
			}
		})
	}
}
