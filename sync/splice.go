package sync

import (
	"errors"
	"io"
	"slices"

	"github.com/tidwall/gjson"
)

// Errors of the splice functions: the body is left as it is.
var (
	// ErrNotObject: the body is not a JSON object.
	ErrNotObject = errors.New("sync: response body is not a JSON object")
	// ErrNoToken: the body has no string token (next_batch or pos) to extend.
	ErrNoToken = errors.New("sync: response body has no string stream token")
)

// Spliced is a response body as a list of pieces: slices of the original body
// and the inserted text, in order. Nothing of the original body is copied;
// the body must not change while the Spliced is in use.
type Spliced struct {
	pieces [][]byte
	n      int
}

// Len is the body's length in bytes (its Content-Length).
func (s Spliced) Len() int { return s.n }

// WriteTo writes the body to w.
func (s Spliced) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for _, p := range s.pieces {
		n, err := w.Write(p)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Bytes returns the body in one new slice.
func (s Spliced) Bytes() []byte {
	out := make([]byte, 0, s.n)
	for _, p := range s.pieces {
		out = append(out, p...)
	}
	return out
}

// SpliceSync extends a /sync response body for position pos: its next_batch
// becomes the composite token of the upstream next_batch and pos, and a
// non-empty sec is set as the top-level "threepids" member. The rest of the
// body is kept byte for byte; only the top level is scanned, never decoded.
func SpliceSync(body []byte, sec Section, pos int64) (Spliced, error) {
	return splice(body, "next_batch", pos, sec, nil)
}

// SpliceSlidingSync is SpliceSync for simplified sliding sync (MSC4186): the
// token is "pos", and a non-empty sec goes into "extensions.threepids".
func SpliceSlidingSync(body []byte, sec Section, pos int64) (Spliced, error) {
	return splice(body, "pos", pos, sec, []string{"extensions"})
}

// edit replaces body[at:end] with text (an insertion when at == end).
type edit struct {
	at, end int
	text    []byte
}

// splice sets the string member tokenKey to the composite token and, when
// sec is non-empty, "threepids" inside the objects named by parents (created
// if absent).
func splice(body []byte, tokenKey string, pos int64, sec Section, parents []string) (Spliced, error) {
	start, end, ok := objectBounds(body)
	if !ok {
		return Spliced{}, ErrNotObject
	}
	tok := gjson.GetBytes(body[start:end+1], tokenKey)
	if tok.Type != gjson.String || tok.Index <= 0 {
		return Spliced{}, ErrNoToken
	}
	text := append([]byte{'"'}, NewToken(tok.Str, pos).AppendTo(nil)...)
	at := start + tok.Index
	edits := []edit{{at: at, end: at + len(tok.Raw), text: append(text, '"')}}
	if len(sec) > 0 {
		edits = append(edits, setIn(body, start, end, append(parents, "threepids"), sec.AppendJSON(nil)))
	}
	slices.SortFunc(edits, func(a, b edit) int { return a.at - b.at })
	out := Spliced{pieces: make([][]byte, 0, 2*len(edits)+1)}
	last := 0
	for _, e := range edits {
		out.add(body[last:e.at])
		out.add(e.text)
		last = e.end
	}
	out.add(body[last:])
	return out, nil
}

func (s *Spliced) add(p []byte) {
	if len(p) > 0 {
		s.pieces = append(s.pieces, p)
		s.n += len(p)
	}
}

// setIn returns the edit that sets the member at path (keys without gjson
// metacharacters) to value in the object whose braces are body[start] and
// body[end]: an existing value is replaced; a missing member is inserted, with
// the objects of the path that are missing around it.
func setIn(body []byte, start, end int, path []string, value []byte) edit {
	cur := gjson.GetBytes(body[start:end+1], path[0])
	if !cur.Exists() || cur.Index <= 0 {
		return insertMember(body, start, end, path, value)
	}
	at := start + cur.Index
	if len(path) > 1 && cur.IsObject() {
		return setIn(body, at, at+len(cur.Raw)-1, path[1:], value)
	}
	return edit{at: at, end: at + len(cur.Raw), text: nest(path[1:], value)}
}

// insertMember inserts "path[0]": nest(path[1:], value) before the closing
// brace at body[end] of the object opened at body[start].
func insertMember(body []byte, start, end int, path []string, value []byte) edit {
	var text []byte
	if i := lastNonSpace(body, start+1, end); i > start {
		text = append(text, ',')
	}
	text = append(text, '"')
	text = append(text, path[0]...)
	text = append(text, '"', ':')
	text = append(text, nest(path[1:], value)...)
	return edit{at: end, end: end, text: text}
}

// nest wraps value in one object per key of path: {"a":{"b":value}}.
func nest(path []string, value []byte) []byte {
	var out []byte
	for _, k := range path {
		out = append(out, '{', '"')
		out = append(out, k...)
		out = append(out, '"', ':')
	}
	out = append(out, value...)
	for range path {
		out = append(out, '}')
	}
	return out
}

// objectBounds returns the positions of the braces of the JSON object that
// body holds (surrounding whitespace allowed).
func objectBounds(body []byte) (start, end int, ok bool) {
	start = firstNonSpace(body)
	end = lastNonSpace(body, 0, len(body))
	if start < 0 || end <= start || body[start] != '{' || body[end] != '}' {
		return 0, 0, false
	}
	return start, end, true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// firstNonSpace is the index of the first non-whitespace byte of body, or -1.
func firstNonSpace(body []byte) int {
	for i := range body {
		if !isSpace(body[i]) {
			return i
		}
	}
	return -1
}

// lastNonSpace is the index of the last non-whitespace byte of body[from:to],
// or -1.
func lastNonSpace(body []byte, from, to int) int {
	for i := to - 1; i >= from; i-- {
		if !isSpace(body[i]) {
			return i
		}
	}
	return -1
}
