package e2e

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
)

// TestRoutesEveryPrefix: every route a homeserver kind serves that threepidd
// takes over (testdata/routes) is answered by threepidd under every prefix
// the homeserver serves it under (unstable included), and threepidd answers
// none of the routes that stay with the homeserver.
func TestRoutesEveryPrefix(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		reqs, err := support.RouteRequests()
		if err != nil {
			t.Fatal(err)
		}
		for _, req := range reqs {
			r := req.Route
			t.Run(req.List.Homeserver+" "+req.Method+" "+req.Path, func(t *testing.T) {
				var body any
				if r.Method != http.MethodGet {
					body = map[string]any{}
				}
				resp := e.Do(r.Method, req.Path, "", body)
				unrecognized := resp.Status == http.StatusNotFound && resp.ErrCode() == "M_UNRECOGNIZED" ||
					resp.Status == http.StatusMethodNotAllowed
				switch {
				case r.To == support.ToThreepidd && unrecognized:
					t.Fatalf("threepidd does not serve it (%s, from %s): %d %s", req.List.Version, r.From, resp.Status, resp.Body)
				case r.To == support.ToHomeserver && !unrecognized:
					t.Fatalf("threepidd answers a homeserver route (%s): %d %s", r.From, resp.Status, resp.Body)
				}
			})
		}
	})
}

// TestCapabilities: /capabilities reaches the homeserver with the client's
// token, and comes back with m.3pid_changes.enabled saying whether threepidd
// can validate a medium, the rest of the homeserver's answer untouched;
// other answers pass through unchanged.
func TestCapabilities(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		for _, tt := range []struct {
			name             string
			opts             harness.Options
			homeserver, want bool
		}{
			{"e-mail and SMS", harness.Options{}, false, true},
			{"SMS only", harness.Options{NoEmail: true}, false, true},
			{"no medium", harness.Options{NoEmail: true, NoMSISDN: true}, true, false},
		} {
			t.Run(tt.name, func(t *testing.T) {
				e := harness.Start(t, b, tt.opts)
				e.HS.SetThreepidChanges(tt.homeserver)
				u := e.NewUser("capable")
				direct := harness.Do(t, "GET", e.HS.URL()+"/_matrix/client/v3/capabilities", u.Token, nil)
				harness.Expect(t, direct, 200, "")
				for _, prefix := range []string{"v3", "r0", "unstable"} {
					r := e.Do("GET", "/_matrix/client/"+prefix+"/capabilities", u.Token, nil)
					harness.Expect(t, r, 200, "")
					caps := capabilities(t, r.Body)
					if got := caps["m.3pid_changes"]; !reflect.DeepEqual(got, map[string]any{"enabled": tt.want}) {
						t.Fatalf("%s: m.3pid_changes = %v, want enabled %t", prefix, got, tt.want)
					}
					want := capabilities(t, direct.Body)
					delete(caps, "m.3pid_changes")
					delete(want, "m.3pid_changes")
					if !reflect.DeepEqual(caps, want) {
						t.Fatalf("%s: the rest differs from the homeserver's:\n%v\n%v", prefix, caps, want)
					}
					if got := e.HS.LastHeaders("/_matrix/client/" + prefix + "/capabilities").Get("Authorization"); got != "Bearer "+u.Token {
						t.Fatalf("%s: the homeserver got Authorization %q", prefix, got)
					}
				}
				// Refusals pass through unchanged.
				r := e.Do("GET", "/_matrix/client/v3/capabilities", "", nil)
				direct = harness.Do(t, "GET", e.HS.URL()+"/_matrix/client/v3/capabilities", "", nil)
				if r.Status != 401 || r.Status != direct.Status || string(r.Body) != string(direct.Body) {
					t.Fatalf("without a token: %d %s, the homeserver %d %s", r.Status, r.Body, direct.Status, direct.Body)
				}
				if strings.Contains(string(r.Body), "3pid_changes") {
					t.Fatal("a refusal got the capability")
				}
			})
		}
	})
}

func capabilities(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var v struct {
		Capabilities map[string]any `json:"capabilities"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Capabilities == nil {
		t.Fatalf("not a capabilities answer: %s", body)
	}
	return v.Capabilities
}
