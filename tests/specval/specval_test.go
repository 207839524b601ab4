package specval

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// specRoot is the repository's spec copy, seen from this package's folder.
const specRoot = "../../testdata/spec"

// TestDocumentedExamples validates every example the copied spec files give
// (response and request examples, parameter examples, schema-level examples)
// against the schema it illustrates. This exercises the $ref resolver (relative
// files, allOf chains across the client-server and identity folders).
func TestDocumentedExamples(t *testing.T) {
	l := newLoader(specRoot)
	var files []string
	err := filepath.WalkDir(filepath.Join(specRoot, "data"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".yaml") {
			rel, _ := filepath.Rel(specRoot, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil {
		t.Fatalf("list spec files: %v", err)
	}
	checked := 0
	for _, file := range files {
		d, err := l.doc(file)
		if err != nil {
			t.Fatalf("%v", err)
		}
		walkExamples(d, file, func(where string, schemaNode any, example any) {
			t.Run(where, func(t *testing.T) {
				s, err := l.compile(file, schemaNode, where)
				if err != nil {
					t.Fatalf("compile: %v", err)
				}
				if errs := s.validate(example, "$", nil); len(errs) > 0 {
					t.Errorf("documented example rejected: %v\nexample: %s", errs, compact(example))
				}
				checked++
			})
		})
	}
	// The copy holds well over a hundred examples; a handful means the walk broke.
	if checked < 100 {
		t.Errorf("only %d examples checked", checked)
	}
}

// walkExamples calls fn for each example in node with the schema it belongs
// to: media types and parameters ({schema, example(s)}) and schemas carrying
// their own example.
func walkExamples(node any, where string, fn func(where string, schemaNode, example any)) {
	switch x := node.(type) {
	case map[string]any:
		if sch, ok := x["schema"]; ok {
			if ex, ok := x["example"]; ok {
				fn(where+"/example", sch, ex)
			}
			switch exs := x["examples"].(type) {
			case map[string]any:
				for name, e := range exs {
					if em, ok := e.(map[string]any); ok {
						if v, ok := em["value"]; ok {
							fn(where+"/examples/"+name, sch, v)
						}
					}
				}
			case []any:
				for _, v := range exs {
					fn(where+"/examples", sch, v)
				}
			}
		} else if ex, ok := x["example"]; ok && isSchema(x) {
			fn(where+"/example", x, ex)
		}
		for _, k := range sortedKeys(x) {
			walkExamples(x[k], where+"/"+k, fn)
		}
	case []any:
		for _, e := range x {
			walkExamples(e, where, fn)
		}
	}
}

// isSchema reports whether a mapping looks like a schema rather than, say, a
// map of property names.
func isSchema(m map[string]any) bool {
	for _, k := range []string{"type", "$ref", "allOf", "properties", "items", "enum"} {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

func TestCheck(t *testing.T) {
	v, err := Load(specRoot)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	const (
		cs       = "/_matrix/client/v3"
		list     = cs + "/account/3pid"
		del      = cs + "/account/3pid/delete"
		add      = cs + "/account/3pid/add"
		reqToken = cs + "/account/3pid/email/requestToken"
		goodList = `{"threepids":[{"medium":"email","address":"a@example.org","validated_at":1535176800000,"added_at":1535336848756}]}`
	)
	tests := []struct {
		name, method, path string
		status             int
		body               string
		// wantErr is a substring of the expected error; "" expects none.
		wantErr string
	}{
		{"list ok", "GET", list, 200, goodList, ""},
		{"list ok on r0", "GET", "/_matrix/client/r0/account/3pid", 200, goodList, ""},
		{"query string ignored", "GET", list + "?user_id=%40a%3Ahs", 200, goodList, ""},
		{"empty list", "GET", list, 200, `{"threepids":[]}`, ""},
		{"missing required", "GET", list, 200, `{"threepids":[{"medium":"email","address":"a@example.org","validated_at":1}]}`, `$.threepids[0]: required property "added_at" missing`},
		{"wrong type", "GET", list, 200, `{"threepids":[{"medium":"email","address":"a@example.org","validated_at":"yesterday","added_at":1}]}`, "$.threepids[0].validated_at: got string, want integer"},
		{"fraction for integer", "GET", list, 200, `{"threepids":[{"medium":"email","address":"a","validated_at":1.5,"added_at":1}]}`, "got number, want integer"},
		{"whole float is an integer", "GET", list, 200, `{"threepids":[{"medium":"email","address":"a","validated_at":1.0,"added_at":1e3}]}`, ""},
		{"int64 overflow", "GET", list, 200, `{"threepids":[{"medium":"email","address":"a","validated_at":9223372036854775808,"added_at":1}]}`, "is not an int64"},
		{"wrong enum", "GET", list, 200, `{"threepids":[{"medium":"fax","address":"a","validated_at":1,"added_at":1}]}`, `"fax" is not one of ["email","msisdn"]`},
		{"array expected", "GET", list, 200, `{"threepids":{}}`, "$.threepids: got object, want array"},
		{"delete ok", "POST", del, 200, `{"id_server_unbind_result":"no-support"}`, ""},
		{"delete wrong enum", "POST", del, 200, `{"id_server_unbind_result":"maybe"}`, "is not one of"},
		{"delete missing result", "POST", del, 200, `{}`, `required property "id_server_unbind_result"`},
		{"undocumented 2xx", "POST", del, 201, `{"id_server_unbind_result":"success"}`, "status not documented"},
		{"undocumented 3xx", "POST", del, 302, ``, "status not documented"},
		{"not JSON", "POST", del, 200, `<html>`, "body is not JSON"},
		{"trailing data", "POST", del, 200, `{"id_server_unbind_result":"success"}{}`, "trailing data"},
		{"undocumented 4xx Matrix error", "POST", del, 400, `{"errcode":"M_INVALID_PARAM","error":"bad"}`, ""},
		{"undocumented 4xx extra fields", "POST", del, 400, `{"errcode":"M_TOKEN_INCORRECT","error":"bad","success":false}`, ""},
		{"undocumented 4xx without errcode", "POST", del, 400, `{"error":"bad"}`, `required property "errcode" missing`},
		{"undocumented 5xx errcode not string", "POST", del, 500, `{"errcode":500}`, "$.errcode: got integer, want string"},
		{"error text not string", "POST", del, 403, `{"errcode":"M_FORBIDDEN","error":null}`, "$.error: got null, want string"},
		{"documented 400", "POST", reqToken, 400, `{"errcode":"M_THREEPID_IN_USE","error":"in use"}`, ""},
		{"documented 400 not JSON", "POST", reqToken, 400, `oops`, "body is not JSON"},
		{"requestToken ok", "POST", reqToken, 200, `{"sid":"abc","submit_url":"https://hs.example/submit"}`, ""},
		{"requestToken without sid", "POST", reqToken, 200, `{"submit_url":"https://hs.example/submit"}`, `required property "sid"`},
		{"submit_url not a URI", "POST", reqToken, 200, `{"sid":"abc","submit_url":"/relative"}`, "is not an absolute URI"},
		{"UIA 401", "POST", add, 401, `{"flows":[{"stages":["m.login.password"]}],"params":{},"session":"s"}`, ""},
		{"UIA 401 without flows", "POST", add, 401, `{"errcode":"M_FORBIDDEN","error":"wrong password"}`, `required property "flows"`},
		{"access-token 401 on UIA route", "POST", add, 401, `{"errcode":"M_UNKNOWN_TOKEN","error":"gone","soft_logout":true}`, ""},
		{"add 200", "POST", add, 200, `{}`, ""},
		{"add 200 not object", "POST", add, 200, `[]`, "got array, want object"},
		{"rate limited", "POST", add, 429, `{"errcode":"M_LIMIT_EXCEEDED","error":"slow","retry_after_ms":2000}`, ""},
		{"rate limited bad retry", "POST", add, 429, `{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":"soon"}`, "$.retry_after_ms: got string, want integer"},
		{"undocumented 429", "POST", reqToken, 429, `{"errcode":"M_LIMIT_EXCEEDED","error":"slow","retry_after_ms":1.5}`, "$.retry_after_ms: got number, want integer"},
		{"unknown route 429", "POST", "/_matrix/federation/v1/3pid/onupdate", 429, `{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":100}`, ""},
		{"deactivate ok", "POST", cs + "/account/deactivate", 200, `{"id_server_unbind_result":"success"}`, ""},
		{"undocumented method skipped", "OPTIONS", add, 200, ``, ""},
		{"unknown route 2xx skipped", "GET", "/_threepidd/admin/v1/threepids/email/a", 200, `{"anything":1}`, ""},
		{"sync skipped", "GET", cs + "/sync", 200, `{"next_batch":1}`, ""},
		{"unknown route 4xx error", "GET", "/_threepidd/admin/v1/x", 404, `{"errcode":"M_NOT_FOUND","error":"no"}`, ""},
		{"unknown route 4xx not Matrix", "GET", "/health", 503, `{"status":"down"}`, `undocumented route: Matrix error: $: required property "errcode" missing`},
		{"unknown route 4xx page", "GET", "/_matrix/client/unstable/add_threepid/email/submit_token", 400, `<html>bad</html>`, ""},
		{"identity literal before template", "GET", "/_matrix/identity/v2/pubkey/isvalid", 200, `{"valid":true}`, ""},
		{"identity wrong type", "GET", "/_matrix/identity/v2/pubkey/isvalid", 200, `{"valid":"yes"}`, "$.valid: got string, want boolean"},
		{"identity template", "GET", "/_matrix/identity/v2/pubkey/ed25519:0", 200, `{"public_key":"abc"}`, ""},
		{"identity documented without body", "GET", "/_matrix/identity/v2/validate/email/submitToken", 200, `<html>ok</html>`, ""},
		{"identity 4XX range", "GET", "/_matrix/identity/v2/validate/email/submitToken", 400, `{"error":"x"}`, `required property "errcode"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Check(tc.method, tc.path, tc.status, []byte(tc.body))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected violation: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Errorf("accepted, want an error containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestLoadRejects(t *testing.T) {
	api := func(schema string) string {
		return "openapi: 3.1.0\npaths:\n  /x:\n    get:\n      responses:\n        \"200\":\n" +
			"          content:\n            application/json:\n              schema: " + schema + "\n" +
			"servers:\n  - url: \"{basePath}\"\n    variables:\n      basePath:\n        default: /_matrix/client/v3\n"
	}
	tests := []struct {
		name, api, wantErr string
	}{
		{"unsupported keyword", api("{type: object, oneOf: [{type: object}]}"), "oneOf: unsupported schema keyword"},
		{"unknown type", api("{type: dict}"), `unknown type "dict"`},
		{"missing ref file", api("{$ref: definitions/missing.yaml}"), "read spec file"},
		{"ref outside", api("{$ref: ../../../../x.yaml}"), "leaves the spec folder"},
		{"bad fragment", api("{$ref: '#/components/schemas/nope'}"), `no "components"`},
		{"no base path", "openapi: 3.1.0\npaths: {/x: {get: {responses: {}}}}\n", "basePath"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(miniSpec(t, tc.api))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Load error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	t.Run("fragment and cycle", func(t *testing.T) {
		v, err := Load(miniSpec(t, api("{$ref: '#/components/schemas/node'}")+
			"components:\n  schemas:\n    node:\n      type: object\n      properties:\n        child: {$ref: '#/components/schemas/node'}\n        n: {type: integer}\n"))
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if err := v.Check("GET", "/_matrix/client/v3/x", 200, []byte(`{"child":{"child":{"n":1}}}`)); err != nil {
			t.Errorf("nested body rejected: %v", err)
		}
		if err := v.Check("GET", "/_matrix/client/v3/x", 200, []byte(`{"child":{"child":{"n":"1"}}}`)); err == nil || !strings.Contains(err.Error(), "$.child.child.n") {
			t.Errorf("deep violation: got %v", err)
		}
	})
}

func TestDefault(t *testing.T) {
	v := Default()
	if v != Default() {
		t.Error("Default loads more than once")
	}
	if err := v.Check("POST", "/_matrix/client/v3/account/3pid/delete", 200, []byte(`{"id_server_unbind_result":"success"}`)); err != nil {
		t.Errorf("Default rejects a valid response: %v", err)
	}
	if err := v.Check("POST", "/_matrix/client/v3/account/3pid/delete", 200, []byte(`{}`)); err == nil {
		t.Error("Default accepts an invalid response")
	}
	broken := &Validator{err: os.ErrNotExist}
	if err := broken.Check("GET", "/health", 200, nil); err == nil {
		t.Error("a validator that failed to load accepts responses")
	}
}

// miniSpec writes a spec folder holding the error schemas and one
// client-server API file with content api; it returns its root.
func miniSpec(t *testing.T, api string) string {
	t.Helper()
	const errorYAML = "type: object\nproperties: {errcode: {type: string}}\nrequired: [errcode]\n"
	root := t.TempDir()
	for rel, content := range map[string]string{
		errorSchemaFile:                 errorYAML,
		rateLimitedFile:                 errorYAML,
		"data/api/client-server/x.yaml": api,
	} {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}
