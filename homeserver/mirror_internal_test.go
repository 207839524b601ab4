package homeserver

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/threepidd/threepidd/mxerr"
)

func TestWithThreepid(t *testing.T) {
	held := []SynapseThreepid{
		{Medium: "email", Address: "Old@Example.org", ValidatedAt: 1, AddedAt: 2},
		{Medium: "msisdn", Address: "+447700900001", ValidatedAt: 3, AddedAt: 4},
	}
	tests := []struct {
		name            string
		medium, address string
		want            bool
		list            []SynapseThreepid
		changed         bool
	}{
		{"add a new address", "email", "new@example.org", true,
			append(slices.Clone(held), SynapseThreepid{Medium: "email", Address: "new@example.org"}), true},
		{"the homeserver's spelling counts as present", "email", "old@example.org", true, held, false},
		{"remove by canonical form, homeserver spelling dropped", "email", "old@example.org", false, held[1:], true},
		{"remove an address not held", "email", "gone@example.org", false, held, false},
		{"same digits, other medium", "email", "447700900001", true,
			append(slices.Clone(held), SynapseThreepid{Medium: "email", Address: "447700900001"}), true},
		{"msisdn with a plus on the homeserver is the same", "msisdn", "447700900001", true, held, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := slices.Clone(held)
			list, changed := withThreepid(held, tc.medium, tc.address, tc.want)
			if changed != tc.changed || !slices.Equal(list, tc.list) {
				t.Fatalf("got %v %v, want %v %v", list, changed, tc.list, tc.changed)
			}
			if !slices.Equal(held, before) {
				t.Fatalf("the input list was modified: %v", held)
			}
		})
	}
}

func TestTemporaryAdminError(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&AdminError{Status: http.StatusServiceUnavailable}, true},
		{&AdminError{Status: http.StatusInternalServerError, ErrCode: "M_UNKNOWN"}, true},
		{&AdminError{Status: http.StatusTooManyRequests, ErrCode: "M_LIMIT_EXCEEDED"}, true},
		{&AdminError{Status: http.StatusUnauthorized, ErrCode: "M_UNKNOWN_TOKEN"}, true},
		{&AdminError{Status: http.StatusForbidden, ErrCode: "M_FORBIDDEN"}, true},
		{&AdminError{Status: http.StatusBadRequest, ErrCode: "M_INVALID_PARAM"}, false},
		{fmt.Errorf("put: %w", &AdminError{Status: http.StatusBadRequest}), false},
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
