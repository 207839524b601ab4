package mxerr

import (
	"errors"
	"testing"
)

func TestUnmarshalObject(t *testing.T) {
	tests := []struct {
		name, body, errcode string
	}{
		{"object", `{"a": "x"}`, ""},
		{"object with white space", " \n{\"a\":\"x\"}\t", ""},
		{"empty", ``, "M_NOT_JSON"},
		{"white space only", "  ", "M_NOT_JSON"},
		{"form encoded", `a=x`, "M_NOT_JSON"},
		{"truncated", `{"a":`, "M_NOT_JSON"},
		{"two values", `{} {}`, "M_NOT_JSON"},
		{"array", `[{"a":"x"}]`, "M_BAD_JSON"},
		{"null", `null`, "M_BAD_JSON"},
		{"string", `"{}"`, "M_BAD_JSON"},
		{"number", `42`, "M_BAD_JSON"},
		{"field of the wrong type", `{"a": 1}`, "M_BAD_JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var v struct {
				A string `json:"a"`
			}
			err := UnmarshalObject([]byte(tc.body), &v)
			if tc.errcode == "" {
				if err != nil || v.A != "x" {
					t.Fatalf("got %+v, %v; want a=x", v, err)
				}
				return
			}
			var mx *Error
			if !errors.As(err, &mx) || mx.ErrCode != tc.errcode || mx.Status != 400 {
				t.Fatalf("err = %v, want 400 %s", err, tc.errcode)
			}
		})
	}
}
