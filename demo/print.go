package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// maxShownBody bounds how much of a non-JSON body is shown.
const maxShownBody = 200

// printer writes the story. Stand-ins report what they see from their own
// goroutines, so every write holds the lock.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

// printf writes one formatted piece of the story. Write errors are ignored:
// the story is for a terminal, and the service runs on without it.
func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, _ = fmt.Fprintf(p.w, format, args...)
}

// step starts numbered step n.
func (p *printer) step(n int, title string) {
	p.printf("\n── %d. %s\n", n, title)
}

// note is a line about what a stand-in saw or did.
func (p *printer) note(who, format string, args ...any) {
	p.printf("   · %s: %s\n", who, fmt.Sprintf(format, args...))
}

// exchange is one request and its answer, as the story shows them.
type exchange struct {
	Status int
	Header http.Header
	Body   []byte
}

// request describes a call for printer.do.
type request struct {
	method, url, token string
	// header holds further request headers, shown too.
	header http.Header
	// body is sent as JSON (none when nil); a []byte is sent as is.
	body any
	// form, when set, is sent as a browser sends a form instead of body.
	form url.Values
}

// do sends req with client, printing the request (method, path, headers of
// interest, JSON body) and the answer (status, JSON body), and returns the answer.
func (p *printer) do(ctx context.Context, client *http.Client, req request) (exchange, error) {
	hr, err := p.send(ctx, req)
	if err != nil {
		return exchange{}, err
	}
	ex, err := roundTrip(client, hr)
	if err != nil {
		return exchange{}, err
	}
	p.answer(ex)
	return ex, nil
}

// send builds req and prints it; roundTrip then sends it.
func (p *printer) send(ctx context.Context, req request) (*http.Request, error) {
	var data []byte
	contentType := "application/json"
	switch b := req.body.(type) {
	case nil:
		if req.form != nil {
			data, contentType = []byte(req.form.Encode()), "application/x-www-form-urlencoded"
		}
	case []byte:
		data = b
	default:
		var err error
		if data, err = json.Marshal(b); err != nil {
			return nil, fmt.Errorf("encode %s body: %w", req.method, err)
		}
	}
	var rd io.Reader
	if data != nil {
		rd = bytes.NewReader(data)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, req.url, rd)
	if err != nil {
		return nil, fmt.Errorf("build %s %s: %w", req.method, req.url, err)
	}
	for k, vs := range req.header {
		hr.Header[k] = vs
	}
	if data != nil {
		hr.Header.Set("Content-Type", contentType)
	}
	if req.token != "" {
		hr.Header.Set("Authorization", "Bearer "+req.token)
	}
	var shown strings.Builder
	fmt.Fprintf(&shown, "   → %s %s\n", req.method, hr.URL.RequestURI())
	if req.token != "" {
		fmt.Fprintf(&shown, "     Authorization: Bearer %s\n", req.token)
	}
	for k := range req.header {
		fmt.Fprintf(&shown, "     %s: %s\n", k, hr.Header.Get(k))
	}
	writeBody(&shown, contentType, data)
	p.printf("%s", shown.String())
	return hr, nil
}

// roundTrip sends hr and reads the whole answer.
func roundTrip(client *http.Client, hr *http.Request) (exchange, error) {
	resp, err := client.Do(hr)
	if err != nil {
		return exchange{}, fmt.Errorf("%s %s: %w", hr.Method, hr.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return exchange{}, fmt.Errorf("%s %s: read answer: %w", hr.Method, hr.URL.Path, err)
	}
	return exchange{Status: resp.StatusCode, Header: resp.Header, Body: body}, nil
}

// answer prints an answer (status, Location, body).
func (p *printer) answer(ex exchange) {
	var shown strings.Builder
	fmt.Fprintf(&shown, "   ← %d %s\n", ex.Status, http.StatusText(ex.Status))
	if loc := ex.Header.Get("Location"); loc != "" {
		fmt.Fprintf(&shown, "     Location: %s\n", loc)
	}
	writeBody(&shown, ex.Header.Get("Content-Type"), ex.Body)
	p.printf("%s", shown.String())
}

// writeBody shows a body under a request or answer line: JSON indented,
// anything else as its type and a bounded first part.
func writeBody(w io.Writer, contentType string, body []byte) {
	if len(body) == 0 {
		return
	}
	mediaType, _, _ := mime.ParseMediaType(contentType)
	var out bytes.Buffer
	if mediaType == "application/json" && json.Indent(&out, body, "     ", "  ") == nil {
		fmt.Fprintf(w, "     %s\n", out.Bytes())
		return
	}
	text := strings.Join(strings.Fields(string(body)), " ")
	if len(text) > maxShownBody {
		text = text[:maxShownBody] + "…"
	}
	fmt.Fprintf(w, "     (%s) %s\n", mediaType, text)
}
