package homeserver

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/threepidd/threepidd/mxerr"
)

func TestTemporaryAdminError(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&AdminError{mxerr.Remote{Status: http.StatusServiceUnavailable}}, true},
		{&AdminError{mxerr.Remote{Status: http.StatusInternalServerError, ErrCode: "M_UNKNOWN"}}, true},
		{&AdminError{mxerr.Remote{Status: http.StatusTooManyRequests, ErrCode: "M_LIMIT_EXCEEDED"}}, true},
		{&AdminError{mxerr.Remote{Status: http.StatusUnauthorized, ErrCode: "M_UNKNOWN_TOKEN"}}, true},
		{&AdminError{mxerr.Remote{Status: http.StatusForbidden, ErrCode: "M_FORBIDDEN"}}, true},
		{&AdminError{mxerr.Remote{Status: http.StatusBadRequest, ErrCode: "M_INVALID_PARAM"}}, false},
		{fmt.Errorf("put: %w", &AdminError{mxerr.Remote{Status: http.StatusBadRequest}}), false},
		{fmt.Errorf("get: %w", ErrUserNotFound), false},
		{fmt.Errorf("%w from the admin API: x", errBadAnswer), false},
		{mxerr.Unavailable, true}, // unreachable
		{errors.New("connection reset"), true},
		{nil, false},
	}
	for _, tc := range tests {
		if got := TemporaryAdminError(tc.err); got != tc.want {
			t.Errorf("TemporaryAdminError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
