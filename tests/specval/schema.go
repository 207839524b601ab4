package specval

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// schema is a compiled JSON Schema: the subset the spec's OpenAPI files use.
type schema struct {
	// types are the allowed JSON types; empty allows any.
	types      []string
	properties map[string]*schema
	required   []string
	// additional applies to properties not in properties; nil allows any,
	// and noAdditional (additionalProperties: false) allows none.
	additional   *schema
	noAdditional bool
	items        *schema
	allOf        []*schema
	enum         []any
	pattern      *regexp.Regexp
	format       string
	// never is the false schema: nothing matches.
	never bool
}

// annotations are schema keywords that do not constrain values.
var annotations = map[string]bool{
	"title": true, "description": true, "example": true, "examples": true, "default": true,
	"deprecated": true, "readOnly": true, "writeOnly": true, "$comment": true,
}

// jsonTypes are the type names JSON Schema defines.
var jsonTypes = map[string]bool{
	"object": true, "array": true, "string": true, "integer": true, "number": true, "boolean": true, "null": true,
}

// loader reads spec files below root and compiles schemas, resolving $ref.
type loader struct {
	root string
	// docs are the parsed files by slash path relative to root.
	docs map[string]any
	// refs are compiled $ref targets by "file#fragment".
	refs map[string]*schema
}

func newLoader(root string) *loader {
	return &loader{root: root, docs: make(map[string]any), refs: make(map[string]*schema)}
}

// doc returns the parsed file, as JSON-like values (numbers as json.Number).
func (l *loader) doc(file string) (any, error) {
	if d, ok := l.docs[file]; ok {
		return d, nil
	}
	data, err := os.ReadFile(filepath.Join(l.root, filepath.FromSlash(file)))
	if err != nil {
		return nil, fmt.Errorf("read spec file: %w", err)
	}
	var raw any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse %s: %w", file, err)
	}
	d, err := normalize(raw)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", file, err)
	}
	l.docs[file] = d
	return d, nil
}

// normalize turns YAML values into what encoding/json decodes with UseNumber.
func normalize(v any) (any, error) {
	switch x := v.(type) {
	case nil, string, bool:
		return x, nil
	case int:
		return json.Number(strconv.Itoa(x)), nil
	case int64:
		return json.Number(strconv.FormatInt(x, 10)), nil
	case uint64:
		return json.Number(strconv.FormatUint(x, 10)), nil
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return nil, fmt.Errorf("number %v has no JSON form", x)
		}
		return json.Number(strconv.FormatFloat(x, 'g', -1, 64)), nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			n, err := normalize(e)
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			n, err := normalize(e)
			if err != nil {
				return nil, err
			}
			out[k] = n
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			n, err := normalize(e)
			if err != nil {
				return nil, err
			}
			out[fmt.Sprint(k)] = n
		}
		return out, nil
	}
	return nil, fmt.Errorf("YAML value %v (%T) has no JSON form", v, v)
}

// compileFile compiles a whole file as one schema.
func (l *loader) compileFile(file string) (*schema, error) {
	return l.ref(file, "#")
}

// responseSchema compiles the application/json schema of an OpenAPI response
// object of file; nil when it documents no JSON body.
func (l *loader) responseSchema(file string, resp any) (*schema, error) {
	m, ok := resp.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("response is not a mapping")
	}
	if ref, ok := m["$ref"].(string); ok { // a shared response (components/responses)
		target, node, err := l.target(file, ref)
		if err != nil {
			return nil, err
		}
		return l.responseSchema(target, node)
	}
	content, _ := m["content"].(map[string]any)
	media, _ := content["application/json"].(map[string]any)
	node, ok := media["schema"]
	if !ok {
		return nil, nil
	}
	return l.compile(file, node, file+" response")
}

// target returns the file a $ref found in file points into, and the node it
// points at.
func (l *loader) target(file, ref string) (string, any, error) {
	target, frag, _ := strings.Cut(ref, "#")
	if target == "" {
		target = file
	} else {
		target = path.Join(path.Dir(file), target)
	}
	if target == ".." || strings.HasPrefix(target, "../") || path.IsAbs(target) {
		return "", nil, fmt.Errorf("$ref %q leaves the spec folder", ref)
	}
	d, err := l.doc(target)
	if err != nil {
		return "", nil, fmt.Errorf("$ref %q: %w", ref, err)
	}
	node, err := pointer(d, frag)
	if err != nil {
		return "", nil, fmt.Errorf("$ref %q: %w", ref, err)
	}
	return target, node, nil
}

// ref compiles the target of a $ref found in file. Targets are compiled once,
// so a cycle of references ends at the schema being compiled.
func (l *loader) ref(file, ref string) (*schema, error) {
	target, node, err := l.target(file, ref)
	if err != nil {
		return nil, err
	}
	_, frag, _ := strings.Cut(ref, "#")
	key := target + "#" + frag
	if s, ok := l.refs[key]; ok {
		return s, nil
	}
	s := &schema{}
	l.refs[key] = s
	compiled, err := l.compile(target, node, key)
	if err != nil {
		delete(l.refs, key)
		return nil, err
	}
	*s = *compiled
	return s, nil
}

// pointer resolves a JSON pointer fragment ("/components/schemas/x") in d.
func pointer(d any, frag string) (any, error) {
	if frag == "" {
		return d, nil
	}
	if !strings.HasPrefix(frag, "/") {
		return nil, fmt.Errorf("fragment %q is not a JSON pointer", frag)
	}
	node := d
	for _, tok := range strings.Split(frag[1:], "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		switch x := node.(type) {
		case map[string]any:
			next, ok := x[tok]
			if !ok {
				return nil, fmt.Errorf("no %q in %q", tok, frag)
			}
			node = next
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(x) {
				return nil, fmt.Errorf("bad index %q in %q", tok, frag)
			}
			node = x[i]
		default:
			return nil, fmt.Errorf("%q goes through a scalar", frag)
		}
	}
	return node, nil
}

// compile turns a schema node of file into a schema. Keywords that would
// constrain values but are not implemented fail, so nothing passes unchecked.
func (l *loader) compile(file string, node any, at string) (*schema, error) {
	if b, ok := node.(bool); ok {
		return &schema{never: !b}, nil
	}
	m, ok := node.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: schema is not a mapping", at)
	}
	s := &schema{}
	for _, key := range sortedKeys(m) {
		val := m[key]
		where := at + "/" + key
		var err error
		switch key {
		case "$ref":
			ref, ok := val.(string)
			if !ok {
				return nil, fmt.Errorf("%s: not a string", where)
			}
			var target *schema
			if target, err = l.ref(file, ref); err == nil {
				s.allOf = append(s.allOf, target)
			}
		case "type":
			s.types, err = typeList(val, where)
		case "properties":
			props, ok := val.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: not a mapping", where)
			}
			s.properties = make(map[string]*schema, len(props))
			for _, name := range sortedKeys(props) {
				if s.properties[name], err = l.compile(file, props[name], where+"/"+name); err != nil {
					return nil, err
				}
			}
		case "required":
			s.required, err = stringList(val, where)
		case "additionalProperties":
			if b, ok := val.(bool); ok {
				s.noAdditional = !b
			} else {
				s.additional, err = l.compile(file, val, where)
			}
		case "items":
			s.items, err = l.compile(file, val, where)
		case "allOf":
			list, ok := val.([]any)
			if !ok {
				return nil, fmt.Errorf("%s: not a list", where)
			}
			for i, sub := range list {
				c, err := l.compile(file, sub, fmt.Sprintf("%s/%d", where, i))
				if err != nil {
					return nil, err
				}
				s.allOf = append(s.allOf, c)
			}
		case "enum":
			list, ok := val.([]any)
			if !ok {
				return nil, fmt.Errorf("%s: not a list", where)
			}
			s.enum = list
		case "pattern":
			p, ok := val.(string)
			if !ok {
				return nil, fmt.Errorf("%s: not a string", where)
			}
			s.pattern, err = regexp.Compile(p)
		case "format":
			if s.format, ok = val.(string); !ok {
				return nil, fmt.Errorf("%s: not a string", where)
			}
		default:
			if !annotations[key] && !strings.HasPrefix(key, "x-") {
				return nil, fmt.Errorf("%s: unsupported schema keyword", where)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
	}
	return s, nil
}

// typeList reads "type": one name or a list of names.
func typeList(val any, where string) ([]string, error) {
	var names []string
	if one, ok := val.(string); ok {
		names = []string{one}
	} else {
		list, err := stringList(val, where)
		if err != nil {
			return nil, err
		}
		names = list
	}
	for _, n := range names {
		if !jsonTypes[n] {
			return nil, fmt.Errorf("unknown type %q", n)
		}
	}
	return names, nil
}

// stringList reads a list of strings.
func stringList(val any, where string) ([]string, error) {
	list, ok := val.([]any)
	if !ok {
		return nil, fmt.Errorf("%s: not a list", where)
	}
	out := make([]string, len(list))
	for i, e := range list {
		if out[i], ok = e.(string); !ok {
			return nil, fmt.Errorf("%s: %v is not a string", where, e)
		}
	}
	return out, nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// validate appends to errs one message per violation of s by v, a value
// decoded with json.Decoder.UseNumber; at is v's location ("$.a[0].b").
func (s *schema) validate(v any, at string, errs []string) []string {
	if s.never {
		return append(errs, at+": no value is allowed here")
	}
	if len(s.types) > 0 && !hasAnyType(v, s.types) {
		return append(errs, fmt.Sprintf("%s: got %s, want %s", at, typeName(v), strings.Join(s.types, " or ")))
	}
	for _, sub := range s.allOf {
		errs = sub.validate(v, at, errs)
	}
	if s.enum != nil && !inEnum(v, s.enum) {
		errs = append(errs, fmt.Sprintf("%s: %s is not one of %s", at, compact(v), compact(s.enum)))
	}
	switch x := v.(type) {
	case map[string]any:
		errs = s.validateObject(x, at, errs)
	case []any:
		if s.items != nil {
			for i, e := range x {
				errs = s.items.validate(e, fmt.Sprintf("%s[%d]", at, i), errs)
			}
		}
	case string:
		if s.pattern != nil && !s.pattern.MatchString(x) {
			errs = append(errs, fmt.Sprintf("%s: %q does not match %s", at, x, s.pattern))
		}
		if s.format == "uri" {
			if u, err := url.Parse(x); err != nil || u.Scheme == "" {
				errs = append(errs, fmt.Sprintf("%s: %q is not an absolute URI", at, x))
			}
		}
	case json.Number:
		if s.format == "int64" {
			if n, ok := integer(x); !ok || !n.IsInt64() {
				errs = append(errs, fmt.Sprintf("%s: %s is not an int64", at, x))
			}
		}
	}
	return errs
}

// validateObject checks required, properties and additionalProperties.
func (s *schema) validateObject(obj map[string]any, at string, errs []string) []string {
	for _, name := range s.required {
		if _, ok := obj[name]; !ok {
			errs = append(errs, fmt.Sprintf("%s: required property %q missing", at, name))
		}
	}
	for _, name := range sortedKeys(obj) {
		where := at + "." + name
		switch sub, ok := s.properties[name]; {
		case ok:
			errs = sub.validate(obj[name], where, errs)
		case s.noAdditional:
			errs = append(errs, where+": property not allowed")
		case s.additional != nil:
			errs = s.additional.validate(obj[name], where, errs)
		}
	}
	return errs
}

// hasAnyType reports whether v is of one of the JSON types.
func hasAnyType(v any, types []string) bool {
	for _, t := range types {
		if t == typeName(v) || (t == "number" && typeName(v) == "integer") {
			return true
		}
	}
	return false
}

// typeName is the narrowest JSON type of v ("integer" for whole numbers).
func typeName(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number:
		if _, ok := integer(x); ok {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// integer returns n as an integer when it is a whole number (1.0 and 1e3 are).
func integer(n json.Number) (*big.Int, bool) {
	f, ok := new(big.Float).SetString(string(n))
	if !ok || !f.IsInt() {
		return nil, false
	}
	i, _ := f.Int(nil)
	return i, true
}

// inEnum reports whether v equals one of the values.
func inEnum(v any, values []any) bool {
	for _, e := range values {
		if equalJSON(v, e) {
			return true
		}
	}
	return false
}

// equalJSON compares two JSON values; numbers by value.
func equalJSON(a, b any) bool {
	switch x := a.(type) {
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		fx, okx := new(big.Float).SetString(string(x))
		fy, oky := new(big.Float).SetString(string(y))
		return okx && oky && fx.Cmp(fy) == 0
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equalJSON(x[i], y[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, xv := range x {
			if yv, ok := y[k]; !ok || !equalJSON(xv, yv) {
				return false
			}
		}
		return true
	}
	return a == b
}

// compact renders v as short JSON for messages.
func compact(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}
