package onupdate_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/threepid"
)

// The seed corpora are in testdata/fuzz/.

// FuzzParse checks that Parse never panics, refuses with a 400 Matrix error,
// and accepts only canonical updates: a non-empty address that is a fixed
// point of canonicalisation, medium email or msisdn, a valid mxid whenever
// one is set (always for an update), a ts that is absent (0) or positive. An
// accepted update survives a round trip through the wire form, with and
// without medium.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := onupdate.Parse(data)
		if err != nil {
			var me *mxerr.Error
			if !errors.As(err, &me) || me.Status != 400 || me.ErrCode == "" {
				t.Fatalf("Parse(%q) failed with %#v, want a 400 Matrix error", data, err)
			}
			return
		}
		if u.Medium != threepid.MediumEmail && u.Medium != threepid.MediumMSISDN {
			t.Fatalf("Parse(%q): medium %q", data, u.Medium)
		}
		if u.Address == "" {
			t.Fatalf("Parse(%q): empty address", data)
		}
		if again, err := threepid.CanonicalAddress(u.Medium, u.Address); err != nil || again != u.Address {
			t.Fatalf("Parse(%q): address %q is not canonical (%q, %v)", data, u.Address, again, err)
		}
		if (!u.Deleted || u.MXID != "") && !threepid.ValidUserID(u.MXID) {
			t.Fatalf("Parse(%q): mxid %q with deleted=%v", data, u.MXID, u.Deleted)
		}
		if u.TS < 0 {
			t.Fatalf("Parse(%q): ts %d", data, u.TS)
		}
		for _, medium := range []string{u.Medium, ""} {
			wire, err := json.Marshal(onupdate.Body{Threepid: u.Address, Medium: medium, Deleted: u.Deleted, MXID: u.MXID, TS: u.TS})
			if err != nil {
				t.Fatal(err)
			}
			if back, err := onupdate.Parse(wire); err != nil || back != u {
				t.Fatalf("Parse(%q) = %+v, but its wire form %s parses to %+v, %v", data, u, wire, back, err)
			}
		}
	})
}
