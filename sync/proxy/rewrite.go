package proxy

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/threepidd/threepidd/homeserver"
	tpsync "github.com/threepidd/threepidd/sync"
)

// decodable reports whether a body with this Content-Encoding can be read
// (only gzip and identity are asked for).
func decodable(encoding string) bool {
	return encoding == "" || strings.EqualFold(encoding, "identity") || strings.EqualFold(encoding, "gzip")
}

// streamHead bounds how much of a body is held while looking for its token.
const streamHead = 256 << 10

// relayBody writes a 200 upstream body (identity or gzip) with the composite
// token for next and, when sec is non-empty, the section.
//
// A body with only its token to change is streamed, without being held: the
// token is looked for in its first streamHead bytes (homeservers write
// next_batch/pos first), replaced, and the rest is copied through. A gzip body
// is decompressed on the fly and sent chunked.
//
// A body with a section to add (or whose token is not in its head) is read
// whole, within the proxy's splice budget, and spliced. One that does not fit
// in what the budget has left is streamed as above, without the section and
// with the client's own position prev in its token, so that the section comes
// with the next sync; a body whose token is not in its head cannot be, and is
// answered 502.
func (p *Proxy) relayBody(w http.ResponseWriter, r *http.Request, resp *http.Response, fl *flavour, sec tpsync.Section, prev, next int64, commit func() bool) error {
	var rd io.Reader = resp.Body
	length := resp.ContentLength
	if strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		zr, err := newGzipReader(resp.Body)
		if err != nil {
			return homeserver.UpstreamError(r.Context(), err)
		}
		defer gzipReaders.Put(zr)
		rd, length = zr, -1
	}
	buf := getBuffer(streamHead)
	res := reservation{budget: p.budget()}
	defer func() {
		putBuffer(buf)
		res.release()
	}()
	tok, whole, err := readHead(rd, buf, fl.tokenKey)
	found := tok.Index > 0
	if err == nil && !whole && (len(sec) > 0 || !found) {
		buf, rd, err = readInto(buf, rd, length, &res)
		whole = err == nil
		if errors.Is(err, errOverBudget) && found {
			slog.DebugContext(r.Context(), "sync body over the splice budget: section deferred", "endpoint", fl.endpoint)
			sectionsDeferred.WithLabelValues(fl.endpoint).Inc()
			sec, next, err = nil, prev, nil
		}
	}
	if err := readOutcome(r, fl, commit, err); err != nil {
		return err
	}
	if whole {
		writeSpliced(w, r, fl, resp.Header, *buf, sec, next)
		return nil
	}
	held := *buf
	token := append(append([]byte{'"'}, tpsync.NewToken(tok.Str, next).AppendTo(nil)...), '"')
	n := -1
	if length >= 0 {
		n = int(length) - len(tok.Raw) + len(token)
	}
	writeHeader(w, resp.Header, n)
	_, _ = w.Write(held[:tok.Index])
	_, _ = w.Write(token)
	_, _ = w.Write(held[tok.Index+len(tok.Raw):])
	if cap(held) > streamHead { // what was held is sent: copy the rest through a head-sized buffer
		putBuffer(buf)
		res.release()
		buf = getBuffer(streamHead)
	}
	copied, err := io.CopyBuffer(w, rd, (*buf)[:cap(*buf)])
	abortOn(err)
	splicedBytes[fl.endpoint].Observe(float64(len(held)) + float64(copied))
	return nil
}

// abortOn ends the response abruptly when relaying a body failed half-way,
// so that the client sees a broken connection, never a body that looks whole
// (a chunked body would otherwise end cleanly).
func abortOn(err error) {
	if err != nil {
		panic(http.ErrAbortHandler)
	}
}

// readHead reads rd into the empty buffer buf until the top-level string
// member key is complete in it, rd ends (ended), or buf is full. tok.Index is
// 0 when the member was not found.
func readHead(rd io.Reader, buf *[]byte, key string) (tok gjson.Result, ended bool, err error) {
	for b := *buf; len(b) < cap(b); b = *buf {
		n, err := rd.Read(b[len(b):cap(b)])
		*buf = b[:len(b)+n]
		if err == io.EOF {
			return gjson.Result{}, true, nil
		}
		if err != nil {
			return gjson.Result{}, false, err
		}
		head := *buf
		start := len(head) - len(bytes.TrimLeft(head, " \t\r\n"))
		if start == len(head) {
			continue
		}
		if head[start] != '{' {
			return gjson.Result{}, false, nil // not a sync body: read it all
		}
		tok = gjson.GetBytes(head[start:], key)
		// Complete only if something follows it: a value cut at the end of the
		// head may look whole.
		if tok.Type == gjson.String && tok.Index > 0 && start+tok.Index+len(tok.Raw) < len(head) {
			tok.Index += start
			return tok, false, nil
		}
	}
	return gjson.Result{}, false, nil
}

// writeSpliced answers 200 with the (decoded) body spliced for sec and next,
// or, when it is not a sync body we understand, with body as it is.
func writeSpliced(w http.ResponseWriter, r *http.Request, fl *flavour, upstream http.Header, body []byte, sec tpsync.Section, next int64) {
	spliced, err := fl.splice(body, sec, next)
	if err != nil {
		slog.WarnContext(r.Context(), "sync body passed through unspliced", "endpoint", fl.endpoint, "err", err)
		writeBody(w, upstream, body)
		return
	}
	splicedBytes[fl.endpoint].Observe(float64(len(body)))
	writeHeader(w, upstream, spliced.Len())
	_, _ = spliced.WriteTo(w)
}
