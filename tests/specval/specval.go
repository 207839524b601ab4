// Package specval checks HTTP responses against the Matrix specification's
// OpenAPI files (the copies under testdata/spec), so the end-to-end tests can
// prove that every answer of threepidd is one the spec allows.
//
// A response is looked up by request path (after its server base path, such as
// /_matrix/client/v3), method and status:
//
//   - a documented status with a JSON schema: the body must match it. The spec's
//     general access-token errors (401 M_MISSING_TOKEN / M_UNKNOWN_TOKEN) are
//     accepted on every operation, even where 401 documents a UIA body;
//   - an undocumented 4xx/5xx, or one documented without a schema: a JSON body
//     must be a Matrix error (definitions/errors/error.yaml; for 429 the
//     rate-limit error, rate_limited.yaml);
//   - an undocumented 1xx/2xx/3xx: a violation.
//
// Requests outside the documented operations (threepidd's own routes, the
// unstable submit_token paths, /sync, undocumented methods) are not checked,
// except that a 4xx/5xx JSON body must still be a Matrix error.
package specval

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// errorSchemaFile is the spec's Matrix error body and rateLimitedFile its
// 429 form (with retry_after_ms), relative to the spec root.
const (
	errorSchemaFile = "data/api/client-server/definitions/errors/error.yaml"
	rateLimitedFile = "data/api/client-server/definitions/errors/rate_limited.yaml"
)

// apiDirs are the folders whose top-level YAML files describe served APIs.
var apiDirs = []string{"data/api/client-server", "data/api/identity"}

// baseAliases are the older names a base path is also served under: the
// client-server API's r0 is today's v3.
var baseAliases = map[string][]string{"/_matrix/client/v3": {"/_matrix/client/r0"}}

// authErrcodes are the spec's access-token errors, possible on any
// authenticated operation whatever its 401 documents.
var authErrcodes = map[string]bool{"M_MISSING_TOKEN": true, "M_UNKNOWN_TOKEN": true}

// httpMethods are the operation keys of an OpenAPI path item.
var httpMethods = map[string]bool{"get": true, "put": true, "post": true, "delete": true,
	"options": true, "head": true, "patch": true, "trace": true}

// Validator checks responses against loaded OpenAPI operations.
type Validator struct {
	// ops are the documented operations by base path.
	ops map[string][]*operation
	// bases are the keys of ops, longest first.
	bases []string
	// errorBody is the Matrix error schema; rateLimited the one for 429.
	errorBody, rateLimited *schema
	// err, when set, is a load failure every Check reports.
	err error
}

// operation is one method of one path template.
type operation struct {
	method   string
	template string
	segments []string
	// responses maps a status ("200", "4XX", "default") to its JSON body
	// schema; nil means documented without a JSON body.
	responses map[string]*schema
}

// Load reads the OpenAPI files of the spec copy at root (the folder holding
// data/api/...), resolving every $ref.
func Load(root string) (*Validator, error) {
	l := newLoader(root)
	v := &Validator{ops: make(map[string][]*operation)}
	var err error
	if v.errorBody, err = l.compileFile(errorSchemaFile); err != nil {
		return nil, fmt.Errorf("load error schema: %w", err)
	}
	if v.rateLimited, err = l.compileFile(rateLimitedFile); err != nil {
		return nil, fmt.Errorf("load rate-limit error schema: %w", err)
	}
	for _, dir := range apiDirs {
		files, err := filepath.Glob(filepath.Join(root, dir, "*.yaml"))
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", dir, err)
		}
		for _, f := range files {
			rel, err := filepath.Rel(root, f)
			if err != nil {
				return nil, fmt.Errorf("locate %s: %w", f, err)
			}
			if err := v.addFile(l, filepath.ToSlash(rel)); err != nil {
				return nil, fmt.Errorf("load %s: %w", rel, err)
			}
		}
	}
	if len(v.ops) == 0 {
		return nil, fmt.Errorf("no OpenAPI operations under %s", root)
	}
	for b := range v.ops {
		v.bases = append(v.bases, b)
	}
	sort.Slice(v.bases, func(i, j int) bool { return len(v.bases[i]) > len(v.bases[j]) })
	return v, nil
}

// addFile registers the operations of one OpenAPI file.
func (v *Validator) addFile(l *loader, file string) error {
	doc, err := l.doc(file)
	if err != nil {
		return err
	}
	root, _ := doc.(map[string]any)
	paths, _ := root["paths"].(map[string]any)
	if paths == nil {
		return nil
	}
	base, err := basePath(root)
	if err != nil {
		return err
	}
	for tpl, item := range paths {
		methods, ok := item.(map[string]any)
		if !ok {
			return fmt.Errorf("path %s is not a mapping", tpl)
		}
		for method, opNode := range methods {
			op, ok := opNode.(map[string]any)
			if !ok || !httpMethods[method] {
				continue
			}
			o := &operation{
				method:    strings.ToUpper(method),
				template:  tpl,
				segments:  strings.Split(strings.Trim(tpl, "/"), "/"),
				responses: make(map[string]*schema),
			}
			responses, _ := op["responses"].(map[string]any)
			for status, resp := range responses {
				s, err := l.responseSchema(file, resp)
				if err != nil {
					return fmt.Errorf("%s %s %s: %w", o.method, tpl, status, err)
				}
				o.responses[strings.ToUpper(status)] = s
			}
			for _, b := range append([]string{base}, baseAliases[base]...) {
				v.ops[b] = append(v.ops[b], o)
			}
		}
	}
	return nil
}

// basePath reads servers[0].variables.basePath.default.
func basePath(root map[string]any) (string, error) {
	servers, _ := root["servers"].([]any)
	if len(servers) > 0 {
		server, _ := servers[0].(map[string]any)
		vars, _ := server["variables"].(map[string]any)
		bp, _ := vars["basePath"].(map[string]any)
		if s, ok := bp["default"].(string); ok && strings.HasPrefix(s, "/") {
			return strings.TrimSuffix(s, "/"), nil
		}
	}
	return "", errors.New("no servers[0].variables.basePath.default")
}

// Check validates one response: method and path of the request (a query
// string is ignored), the status and the raw body. It returns nil when the
// spec allows the response, or an error naming each violated rule.
func (v *Validator) Check(method, path string, status int, body []byte) error {
	if v.err != nil {
		return v.err
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	op := v.lookup(strings.ToUpper(method), path)
	isError := status >= 400
	if op == nil {
		if isError && looksLikeJSON(body) {
			return v.checkBody(v.errorSchema(status), body, "undocumented route: Matrix error")
		}
		return nil
	}
	what := fmt.Sprintf("%s %s %d", op.method, op.template, status)
	s, documented := op.response(status)
	switch {
	case !documented && !isError:
		return fmt.Errorf("%s: status not documented for this operation", what)
	case documented && s != nil:
		err := v.checkBody(s, body, what)
		if err != nil && status == 401 && v.isAuthError(body) {
			return nil
		}
		return err
	case isError && looksLikeJSON(body):
		return v.checkBody(v.errorSchema(status), body, what+" (no schema): Matrix error")
	}
	return nil
}

// errorSchema is the schema of an error status without its own: the spec's
// rate-limit error for 429, the plain Matrix error otherwise.
func (v *Validator) errorSchema(status int) *schema {
	if status == 429 {
		return v.rateLimited
	}
	return v.errorBody
}

// isAuthError reports whether body is a Matrix error with an access-token errcode.
func (v *Validator) isAuthError(body []byte) bool {
	val, err := decodeJSON(body)
	if err != nil || len(v.errorBody.validate(val, "$", nil)) > 0 {
		return false
	}
	code, _ := val.(map[string]any)["errcode"].(string)
	return authErrcodes[code]
}

// checkBody decodes body and validates it against s.
func (v *Validator) checkBody(s *schema, body []byte, what string) error {
	val, err := decodeJSON(body)
	if err != nil {
		return fmt.Errorf("%s: body is not JSON: %w", what, err)
	}
	if errs := s.validate(val, "$", nil); len(errs) > 0 {
		return fmt.Errorf("%s: %s", what, strings.Join(errs, "; "))
	}
	return nil
}

// lookup finds the documented operation for method and path, preferring the
// template with the most literal segments (/pubkey/isvalid over /pubkey/{keyId}).
func (v *Validator) lookup(method, path string) *operation {
	for _, base := range v.bases {
		rest, ok := strings.CutPrefix(path, base)
		if !ok || !strings.HasPrefix(rest, "/") {
			continue
		}
		segs := strings.Split(strings.Trim(rest, "/"), "/")
		var best *operation
		bestLiterals := -1
		for _, op := range v.ops[base] {
			if op.method != method {
				continue
			}
			if n, ok := op.match(segs); ok && n > bestLiterals {
				best, bestLiterals = op, n
			}
		}
		if best != nil {
			return best
		}
	}
	return nil
}

// match reports whether segs fit the template, and how many literal segments matched.
func (o *operation) match(segs []string) (int, bool) {
	if len(segs) != len(o.segments) {
		return 0, false
	}
	literals := 0
	for i, t := range o.segments {
		switch {
		case strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}"):
			if segs[i] == "" {
				return 0, false
			}
		case t == segs[i]:
			literals++
		default:
			return 0, false
		}
	}
	return literals, true
}

// response returns the schema for status: exact, then range ("4XX"), then
// "default". documented is false when none applies.
func (o *operation) response(status int) (s *schema, documented bool) {
	code := strconv.Itoa(status)
	for _, key := range []string{code, code[:1] + "XX", "DEFAULT"} {
		if s, ok := o.responses[key]; ok {
			return s, true
		}
	}
	return nil, false
}

// looksLikeJSON reports whether body tries to be a JSON object or array (an
// HTML page or an empty body does not).
func looksLikeJSON(body []byte) bool {
	b := bytes.TrimSpace(body)
	return len(b) > 0 && (b[0] == '{' || b[0] == '[')
}

// decodeJSON decodes one JSON value, keeping numbers as json.Number.
func decodeJSON(body []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var val any
	if err := dec.Decode(&val); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON value")
	}
	return val, nil
}

var (
	defaultOnce      sync.Once
	defaultValidator *Validator
)

// Default returns the validator of this repository's testdata/spec, loaded
// once. If loading fails, every Check of the returned validator reports why.
func Default() *Validator {
	defaultOnce.Do(func() {
		root, err := repoRoot()
		if err == nil {
			defaultValidator, err = Load(filepath.Join(root, "testdata", "spec"))
		}
		if err != nil {
			defaultValidator = &Validator{err: fmt.Errorf("specval: load testdata/spec: %w", err)}
		}
	})
	return defaultValidator
}

// repoRoot walks up to go.mod, from this source file's folder (when the build
// kept its path) or else from the working directory (a package folder under
// go test).
func repoRoot() (string, error) {
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("no go.mod above the source or working directory")
}
