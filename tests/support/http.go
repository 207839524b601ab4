package support

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Request is one HTTP request of a test.
type Request struct {
	Method, URL string
	// Token is sent as a bearer token ("" for none).
	Token string
	// Body is nil (no body), a []byte or string (sent as is), an io.Reader
	// (sent as it reads) or any other value (sent as JSON). A request with a
	// body says Content-Type: application/json unless Header sets it.
	Body any
	// ContentLength declares the length of an io.Reader body; 0 sends it
	// chunked, without a Content-Length.
	ContentLength int64
	// Header holds more headers; a name with several values is sent as
	// several header lines.
	Header http.Header
}

// Response is an HTTP answer, its body read in full.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Object decodes the body as a JSON object.
func (r Response) Object() (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		return nil, fmt.Errorf("answer %d is not a JSON object: %w: %s", r.Status, err, r.Body)
	}
	return m, nil
}

// JSON decodes the body as a JSON object, failing the test if it is not one.
func (r Response) JSON(t testing.TB) map[string]any {
	t.Helper()
	m, err := r.Object()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ErrCode returns the errcode of a Matrix error body ("" if none).
func (r Response) ErrCode() string {
	var m struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(r.Body, &m)
	return m.ErrCode
}

// String is the status and the body.
func (r Response) String() string { return fmt.Sprintf("%d %s", r.Status, r.Body) }

// Client sends requests and reads whole answers.
type Client struct {
	// HTTP sends the requests; nil means a client that hands redirects back
	// (the e-mail validation link may answer 302) and has no timeout of its
	// own (the context bounds each request).
	HTTP *http.Client
}

var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// Send sends req and reads the whole answer. An error is a request that got
// no (complete) answer.
func (c Client) Send(ctx context.Context, req Request) (Response, error) {
	var body io.Reader
	switch b := req.Body.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(b)
	case string:
		body = strings.NewReader(b)
	case io.Reader:
		body = io.NopCloser(b) // a type NewRequestWithContext cannot measure
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return Response{}, fmt.Errorf("encode %s %s body: %w", req.Method, req.URL, err)
		}
		body = bytes.NewReader(data)
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, req.URL, body)
	if err != nil {
		return Response{}, fmt.Errorf("build %s %s: %w", req.Method, req.URL, err)
	}
	if _, ok := req.Body.(io.Reader); ok {
		hr.ContentLength = req.ContentLength
		if hr.ContentLength == 0 {
			hr.ContentLength = -1
		}
	}
	if req.Body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if req.Token != "" {
		hr.Header.Set("Authorization", "Bearer "+req.Token)
	}
	for name, values := range req.Header {
		hr.Header.Del(name)
		for _, v := range values {
			hr.Header.Add(name, v)
		}
	}
	client := c.HTTP
	if client == nil {
		client = noRedirects
	}
	resp, err := client.Do(hr)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: read answer: %w", req.Method, req.URL, err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// Do sends method to url with an optional bearer token and body (as
// [Request.Body] takes it).
func (c Client) Do(ctx context.Context, method, url, token string, body any) (Response, error) {
	return c.Send(ctx, Request{Method: method, URL: url, Token: token, Body: body})
}

// Send sends req with the default [Client].
func Send(ctx context.Context, req Request) (Response, error) { return Client{}.Send(ctx, req) }

// Do sends a request with the default [Client].
func Do(ctx context.Context, method, url, token string, body any) (Response, error) {
	return Client{}.Do(ctx, method, url, token, body)
}

// Drain sends GET url with token as bearer on client and reads the answer to
// its end through buf, keeping nothing: what a benchmark's client does, at
// the least cost to itself. Anything but a 200 is an error.
func Drain(client *http.Client, url, token string, buf []byte) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, err = io.CopyBuffer(io.Discard, resp.Body, buf)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return nil
}
