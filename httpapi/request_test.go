package httpapi_test

import (
	"net/http/httptest"
	"testing"

	"github.com/threepidd/threepidd/httpapi"
)

// TestQueryValue: QueryValue answers what r.URL.Query().Get does, also for
// names spelled with escapes, repeated, or only inside another parameter.
func TestQueryValue(t *testing.T) {
	for _, query := range []string{
		"",
		"since=s1&timeout=0",
		"user_id=%40bob%3Ahs&timeout=0",
		"timeout=0&user%5Fid=%40carol%3Ahs",
		"%75ser_id=dave",
		"user_id=first&user_id=second",
		"xuser_id=no&user_idx=no",
		"user_id",
		"user_id=%zz&user_id=ok",
		"a;user_id=semicolon",
		"access_token=tok&user_id=+spaced+",
		"filter=%7B%7D",
	} {
		r := httptest.NewRequest("GET", "/x?"+query, nil)
		for _, name := range []string{"user_id", "access_token"} {
			if got, want := httpapi.QueryValue(r, name), r.URL.Query().Get(name); got != want {
				t.Errorf("QueryValue(%q, %q) = %q, want %q", query, name, got, want)
			}
		}
	}
}
