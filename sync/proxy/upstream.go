package proxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/threepidd/threepidd/homeserver"
)

// roundTrip sends r to the homeserver under ctx as caller (what the
// homeserver sees of the client): same method and path, the query with the
// changes in set (an empty value drops the parameter), body as the request
// body, acceptEncoding as Accept-Encoding.
func (p *Proxy) roundTrip(ctx context.Context, r *http.Request, caller homeserver.Caller, body []byte, set map[string]string, acceptEncoding, endpoint string) (*http.Response, error) {
	set["access_token"] = "" // sent as a header by SetHeaders
	target := r.URL.EscapedPath()
	if q := rewriteQuery(r.URL.RawQuery, set); q != "" {
		target += "?" + q
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, p.Homeserver.URL(target), rd)
	if err != nil {
		return nil, err
	}
	caller.SetHeaders(req)
	for _, h := range []string{"Accept", "Content-Type"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	start := time.Now()
	resp, err := p.Homeserver.RoundTrip(req)
	if err == nil {
		upstreamSeconds[endpoint].Observe(time.Since(start).Seconds())
	}
	return resp, err
}

// forwardEncoding is the Accept-Encoding sent upstream for a body we may
// splice: gzip if the client takes it (so a body we cannot read never comes
// back), else identity.
func forwardEncoding(clientAccepts string) string {
	for part := range strings.SplitSeq(clientAccepts, ",") {
		name, params, _ := strings.Cut(part, ";")
		name = strings.TrimSpace(name)
		if !strings.EqualFold(name, "gzip") && name != "*" {
			continue
		}
		if q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q="); ok {
			if v, err := strconv.ParseFloat(q, 64); err == nil && v == 0 {
				continue
			}
		}
		return "gzip"
	}
	return "identity"
}

// rewriteQuery returns raw with the parameters named in set given their new
// value (dropped when it is ""); every other byte is kept as the client sent it.
func rewriteQuery(raw string, set map[string]string) string {
	if raw == "" {
		return ""
	}
	var b strings.Builder
	b.Grow(len(raw))
	for pair := range strings.SplitSeq(raw, "&") {
		key, _, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(key)
		if value, ok := set[name]; err == nil && ok {
			if value == "" {
				continue
			}
			pair = key + "=" + url.QueryEscape(value)
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(pair)
	}
	return b.String()
}

// hopHeaders are the hop-by-hop headers a proxy does not relay, in canonical
// form (the header map is indexed with them as they are).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// copyHeaders sets the upstream headers on dst, upstream values replacing
// ours (e.g. CORS), without the hop-by-hop ones.
func copyHeaders(dst, upstream http.Header) {
	for k, vs := range upstream {
		dst[k] = vs
	}
	for _, h := range hopHeaders {
		delete(dst, h)
	}
}

// writeHeader answers 200 with Content-Length n (none when n < 0: the body
// goes chunked) and the upstream headers (those of a decoded body: no
// Content-Encoding; no hop-by-hop headers; upstream values replace ours, e.g.
// CORS).
func writeHeader(w http.ResponseWriter, upstream http.Header, n int) {
	dst := w.Header()
	copyHeaders(dst, upstream)
	delete(dst, "Content-Encoding")
	delete(dst, "Content-Length")
	if n >= 0 {
		dst["Content-Length"] = []string{strconv.Itoa(n)}
	}
	if dst.Get("Content-Type") == "" {
		dst["Content-Type"] = []string{"application/json"}
	}
	w.WriteHeader(http.StatusOK)
}

// writeBody answers 200 with body and the upstream headers.
func writeBody(w http.ResponseWriter, upstream http.Header, body []byte) {
	writeHeader(w, upstream, len(body))
	_, _ = w.Write(body)
}

// relay writes an upstream answer as it came: status, headers, body.
func relay(w http.ResponseWriter, resp *http.Response) {
	copyHeaders(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	buf := getBuffer(32 << 10)
	defer putBuffer(buf)
	_, err := io.CopyBuffer(w, resp.Body, (*buf)[:cap(*buf)])
	abortOn(err)
}
