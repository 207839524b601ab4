package e2e

// Helpers and names the tests of several files share.

import (
	"testing"

	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
)

// Paths of the client-server API the tests of several files call.
const (
	requestTokenPath = "/_matrix/client/v3/account/3pid/email/requestToken"
	unbindPath       = "/_matrix/client/v3/account/3pid/unbind"
	deletePath       = "/_matrix/client/v3/account/3pid/delete"
	emailSubmitPath  = "/_matrix/client/unstable/add_threepid/email/submit_token"
	msisdnSubmitPath = "/_matrix/client/unstable/add_threepid/msisdn/submit_token"
	deactivateV3     = "/_matrix/client/v3/account/deactivate"
	deactivateR0     = "/_matrix/client/r0/account/deactivate"
)

// The admin API, and the homeserver's admin token the Synapse import and
// mirror use.
const (
	adminToken   = "adm-s3cret"
	adminPrefix  = "/_threepidd/admin/v1"
	hsAdminToken = harness.HSAdminToken
	// mirrorYAML turns the Synapse mirror on (harness.Options.HomeserverYAML).
	mirrorYAML = "admin_token: " + hsAdminToken + ", mirror: synapse_admin"
)

// unbindResult returns id_server_unbind_result of a 200 answer.
func unbindResult(t *testing.T, r harness.Response) string {
	t.Helper()
	expectAnswer(t, r, 200, "")
	got, _ := r.JSON(t)["id_server_unbind_result"].(string)
	return got
}

// guardRefused are id_server values a client may name that are no configured
// identity server and that the outbound guard refuses without dialling (no
// allowlist in the harness): loopback, private and link-local addresses, and
// a name that resolves to loopback (from /etc/hosts: no DNS query leaves).
var guardRefused = []string{"127.0.0.1:1", "localhost:1", "[::1]:1", "10.0.0.1", "192.168.0.1:8090", "169.254.169.254", "[fe80::1]:443"}

// notServerNames are id_server values that are not server names, so nothing
// can be dialled for them: a URL (here the configured server's), a space, a
// path.
func notServerNames(is *fakes.IdentityServer) []string {
	return []string{is.URL(), "id server.example", is.Name() + "/x"}
}
