package e2e

// Hostile and edge-case request bodies for the client-server 3PID endpoints,
// as the spec (administrative_contact.yaml and the requestToken definitions)
// and DESIGN.md's Decisions have them answered: the documented status and
// errcode with a {"errcode", "error"} body, never a 5xx for a client's
// mistake, and nothing left behind by a refused request.

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/threepidd/threepidd/tests/harness"
)

// probe is one request body and the answer it must get.
type probe struct {
	name    string
	body    any // as harness.Do takes it: a string is sent as is
	status  int
	errcode string // "" for a 200
}

// expectAnswer fails unless r has status and errcode; an error answer must be
// exactly a Matrix error body, {"errcode": "M_...", "error": "..."} plus at
// most the documented extras.
func expectAnswer(t *testing.T, r harness.Response, status int, errcode string) {
	t.Helper()
	if r.Status != status || r.ErrCode() != errcode {
		t.Fatalf("got %d %q, want %d %q: %s", r.Status, r.ErrCode(), status, errcode, r.Body)
	}
	if status < 400 {
		return
	}
	var body map[string]any
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatalf("error body is not a JSON object: %s", r.Body)
	}
	if msg, ok := body["error"].(string); !ok || msg == "" {
		t.Fatalf("error body without an error text: %s", r.Body)
	}
	for k := range body {
		switch k {
		case "errcode", "error", "success", "retry_after_ms", "soft_logout":
		default:
			t.Fatalf("error body has an unexpected field %q: %s", k, r.Body)
		}
	}
}

// runProbes posts each probe's body to path and checks the answer.
func runProbes(t *testing.T, e *harness.Env, path, token string, probes []probe) {
	t.Helper()
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			expectAnswer(t, e.Do("POST", path, token, p.body), p.status, p.errcode)
		})
	}
}

// listed returns u's 3PIDs as "medium:address" strings.
func listed(t *testing.T, e *harness.Env, u harness.User) []string {
	t.Helper()
	var out []string
	for _, x := range e.Threepids(t, u) {
		out = append(out, fmt.Sprintf("%v:%v", x["medium"], x["address"]))
	}
	return out
}

// expectListed fails unless u holds exactly want ("medium:address").
func expectListed(t *testing.T, e *harness.Env, u harness.User, want ...string) {
	t.Helper()
	if got := listed(t, e, u); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s holds %v, want %v", u.ID, got, want)
	}
}

// withField returns a copy of base with key set to v (or removed when v is
// the string "<absent>").
func withField(base map[string]any, key string, v any) map[string]any {
	out := make(map[string]any, len(base)+1)
	for k, x := range base {
		out[k] = x
	}
	if v == "<absent>" {
		delete(out, key)
	} else {
		out[key] = v
	}
	return out
}

// jsonValue is a JSON value with a name for subtest names.
type jsonValue struct {
	name  string
	value any
}

// badStrings are values of the wrong JSON type for a string field.
var badStrings = []jsonValue{
	{"number", 5}, {"bool", true}, {"array", []any{"x"}}, {"object", map[string]any{"a": "b"}},
}

// badInts are values an integer field refuses: wrong types, and numbers that
// are not JSON integers of 64 bits (Synapse: StrictInt).
var badInts = []jsonValue{
	{"bool", true}, {"array", []any{1}}, {"object", map[string]any{}}, {"quoted", "1"}, {"word", "one"},
	{"fraction", 1.5}, {"exponent", json.RawMessage("1e2")}, {"too big", json.RawMessage("99999999999999999999")},
}

// fieldProbes returns, for a required field of base: absent and null → 400
// M_MISSING_PARAM, each value of bad → 400 M_BAD_JSON.
func fieldProbes(base map[string]any, field string, bad []jsonValue) []probe {
	ps := []probe{
		{field + " absent", withField(base, field, "<absent>"), 400, "M_MISSING_PARAM"},
		{field + " null", withField(base, field, nil), 400, "M_MISSING_PARAM"},
	}
	for _, v := range bad {
		ps = append(ps, probe{field + " " + v.name, withField(base, field, v.value), 400, "M_BAD_JSON"})
	}
	return ps
}

// nonObjects are bodies that are not a JSON object: M_NOT_JSON when they
// are not JSON at all, M_BAD_JSON (as Synapse) when they are JSON of another type.
var nonObjects = []probe{
	{"empty body", "", 400, "M_NOT_JSON"},
	{"not json", "client_secret=x", 400, "M_NOT_JSON"},
	{"truncated", `{"client_secret": "x"`, 400, "M_NOT_JSON"},
	{"trailing garbage", `{} {}`, 400, "M_NOT_JSON"},
	{"null", "null", 400, "M_BAD_JSON"},
	{"array", `[{}]`, 400, "M_BAD_JSON"},
	{"string", `"{}"`, 400, "M_BAD_JSON"},
	{"number", `42`, 400, "M_BAD_JSON"},
}

// badSecrets are client_secret (or sid) values the spec's grammar
// [0-9a-zA-Z.=_-]{1,255} refuses: 400 M_INVALID_PARAM.
var badSecrets = []struct{ name, value string }{
	{"empty", ""},
	{"space", "a b"},
	{"slash", "a/b"},
	{"plus", "a+b"},
	{"unicode", "sécret"},
	{"NUL", "a\x00b"},
	{"newline", "a\nb"},
	{"256 chars", strings.Repeat("a", 256)},
}
