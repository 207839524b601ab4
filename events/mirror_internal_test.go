package events

import (
	"slices"
	"testing"

	"github.com/threepidd/threepidd/homeserver"
)

func TestWithThreepid(t *testing.T) {
	held := []homeserver.SynapseThreepid{
		{Medium: "email", Address: "Old@Example.org", ValidatedAt: 1, AddedAt: 2},
		{Medium: "msisdn", Address: "+447700900001", ValidatedAt: 3, AddedAt: 4},
	}
	tests := []struct {
		name            string
		medium, address string
		want            bool
		list            []homeserver.SynapseThreepid
		changed         bool
	}{
		{"add a new address", "email", "new@example.org", true,
			append(slices.Clone(held), homeserver.SynapseThreepid{Medium: "email", Address: "new@example.org"}), true},
		{"the homeserver's spelling counts as present", "email", "old@example.org", true, held, false},
		{"remove by canonical form, homeserver spelling dropped", "email", "old@example.org", false, held[1:], true},
		{"remove an address not held", "email", "gone@example.org", false, held, false},
		{"same digits, other medium", "email", "447700900001", true,
			append(slices.Clone(held), homeserver.SynapseThreepid{Medium: "email", Address: "447700900001"}), true},
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
