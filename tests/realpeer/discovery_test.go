//go:build realpeer

package realpeer

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
)

// discoverySteps are journey.mjs's DISCOVERY_STEPS, in order.
var discoverySteps = []string{
	"login", "requestAdd3pidEmailToken", "readMail", "openLink", "addThreePidOnly",
	"share", "revoke", "shareAgain", "deleteShared", "getThreePidsAfterDelete",
}

// TestDiscoveryJourney runs Element's Discovery settings with matrix-js-sdk
// (journey.mjs --steps discovery) through nginx against threepidd in front of
// a real Dendrite, with the identity server the user chose: an HTTPS fake
// that is not in threepidd's config (threepidd has no identity_servers at
// all), reached at https://<id_server> through the outbound guard, which lets
// 127.0.0.1 through only because outbound.ip_range_allowlist says so. The
// user shares an address of the account (bind), revokes it (unbind, which
// matrix-js-sdk always sends with id_server), shares it again and deletes it
// from the account (delete, without id_server: threepidd's record leads to
// the identity server).
func TestDiscoveryJourney(t *testing.T) {
	ctx := ContextOf(t)
	d := StartDendrite(ctx, t, env)
	for _, b := range storagetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			localpart := "discovery-" + b.Name
			alice := mustRegister(ctx, t, d, localpart, localpart+"-password")
			email := localpart + "@example.org"

			sink := fakes.NewSMTPSink(t)
			is := fakes.NewIdentityServerTLS(t)
			hsKey, err := signingkey.Load(d.KeyPath)
			if err != nil {
				t.Fatal(err)
			}
			is.TrustHomeserver(d.ServerName, string(hsKey.ID), hsKey.PublicKey())
			ca := filepath.Join(t.TempDir(), "identity-ca.pem")
			if err := os.WriteFile(ca, is.CertificatePEM(), 0o600); err != nil {
				t.Fatal(err)
			}

			addr := ReserveAddr(t)
			n := StartNginx(ctx, t, env, addr, d.Addr)
			StartThreepidd(ctx, t, ThreepiddOptions{
				Backend: b, Dendrite: d, Addr: addr, PublicBaseURL: n.URL, SMTPPort: sink.Port(),
				Outbound: &config.Outbound{
					IPRangeDenylist:  config.DefaultIPRangeDenylist,
					IPRangeAllowlist: []string{"127.0.0.1/32"},
					CAFiles:          []string{ca},
				},
			})
			ctl := &journeyControl{sink: sink, is: is, email: email, homeserver: d.ServerName, nginxURL: n.URL}
			ctlSrv := httptest.NewServer(ctl.handler())
			t.Cleanup(ctlSrv.Close)

			results := runSteps(ctx, t, env, JourneyOptions{
				BaseURL: n.URL, User: localpart, Password: alice.Password, Email: email,
				PhoneCountry: journeyPhoneCountry, PhoneNumber: journeyPhoneNumber,
				IdentityServerURL: is.URL(), ControlURL: ctlSrv.URL, Steps: "discovery",
			}, discoverySteps)

			// Each step's answer, and whom the identity server binds the
			// address to afterwards.
			for _, want := range []struct {
				step, answer, bound string
			}{
				{"share", `{}`, alice.UserID},
				{"revoke", `{"id_server_unbind_result":"success"}`, ""},
				{"shareAgain", `{}`, alice.UserID},
				{"deleteShared", `{"id_server_unbind_result":"success"}`, ""},
			} {
				var got struct {
					Answer map[string]any `json:"answer"`
					Bound  string         `json:"bound"`
				}
				results.decode(t, want.step, &got)
				answer, _ := json.Marshal(got.Answer) // keys sorted
				if string(answer) != want.answer || got.Bound != want.bound {
					t.Errorf("%s: answered %s with the address bound to %q; want %s and %q", want.step, answer, got.Bound, want.answer, want.bound)
				}
			}
			if got := string(results["getThreePidsAfterDelete"]); got != `{"threepids":[]}` {
				t.Errorf("getThreePidsAfterDelete: %s, want {\"threepids\":[]}", got)
			}
			calls := is.UnbindCalls()
			if len(calls) != 2 {
				t.Fatalf("identity server unbind calls %+v, want 2 (revoke, delete)", calls)
			}
			for _, c := range calls {
				if !c.Verified || c.Origin != d.ServerName || c.MXID != alice.UserID || c.Address != email {
					t.Errorf("unbind call %+v, want one signed by %s for %s, verified", c, d.ServerName, alice.UserID)
				}
			}
			if n := is.BindCalls(); n != 2 {
				t.Errorf("identity server bind calls: %d, want 2", n)
			}
		})
	}
}
