package load

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// requestTimeout bounds one request of the load client.
const requestTimeout = 30 * time.Second

// Client is the load generator's HTTP client: a pooled transport with room
// for every concurrent client to keep its connection to each target, and no
// response checking beyond the status (the e2e harness validates answers
// against the spec; here that would cost more than the server under test).
type Client struct {
	http *http.Client
}

// NewClient returns a client for up to conns concurrent requests per host.
func NewClient(conns int) *Client {
	return &Client{http: &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        4 * conns,
			MaxIdleConnsPerHost: 2 * conns,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
		// The e-mail link may answer 302 to a next_link; the status is what counts.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Call is one request.
type Call struct {
	Method, URL string
	// Authorization is the header's value ("" for none).
	Authorization string
	// Header names one more header to set (with HeaderValue), e.g. the
	// baseline's user header; "" for none.
	Header, HeaderValue string
	// Body is sent as application/json when non-nil.
	Body []byte
	// Want is the expected status.
	Want int
}

// Do sends c and returns the answer's body; any other status than c.Want is
// an error quoting the body.
func (cl *Client) Do(ctx context.Context, c Call) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var body io.Reader
	if c.Body != nil {
		body = bytes.NewReader(c.Body)
	}
	req, err := http.NewRequestWithContext(ctx, c.Method, c.URL, body)
	if err != nil {
		return nil, fmt.Errorf("build request %s %s: %w", c.Method, c.URL, err)
	}
	if c.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Authorization != "" {
		req.Header.Set("Authorization", c.Authorization)
	}
	if c.Header != "" {
		req.Header.Set(c.Header, c.HeaderValue)
	}
	resp, err := cl.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", c.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", c.Method, req.URL.Path, err)
	}
	if resp.StatusCode != c.Want {
		return data, fmt.Errorf("%s %s: status %d, want %d: %.200s", c.Method, req.URL.Path, resp.StatusCode, c.Want, data)
	}
	return data, nil
}

// CloseIdle closes the idle connections (between backends).
func (cl *Client) CloseIdle() { cl.http.CloseIdleConnections() }
