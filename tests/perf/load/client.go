package load

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/threepidd/threepidd/tests/support"
)

// requestTimeout bounds one request of the load client.
const requestTimeout = 30 * time.Second

// Client is the load generator's HTTP client: a pooled transport with room
// for every concurrent client to keep its connection to each target, and no
// response checking beyond the status (the e2e harness validates answers
// against the spec; here that would cost more than the server under test).
type Client struct {
	http support.Client
}

// NewClient returns a client for up to conns concurrent requests per host.
func NewClient(conns int) *Client {
	return &Client{http: support.Client{HTTP: &http.Client{
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
	}}}
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
	req := support.Request{Method: c.Method, URL: c.URL, Header: http.Header{}}
	if c.Body != nil {
		req.Body = c.Body
	}
	if c.Authorization != "" {
		req.Header.Set("Authorization", c.Authorization)
	}
	if c.Header != "" {
		req.Header.Set(c.Header, c.HeaderValue)
	}
	r, err := cl.http.Send(ctx, req)
	if err != nil {
		return nil, err
	}
	if r.Status != c.Want {
		return r.Body, fmt.Errorf("%s %s: status %d, want %d: %.200s", c.Method, c.URL, r.Status, c.Want, r.Body)
	}
	return r.Body, nil
}

// OpenLink opens a validation link as a person does: the page, then its
// button (a form POST). Both must answer 200.
func (cl *Client) OpenLink(ctx context.Context, link string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	page, submitted, err := cl.http.OpenLink(ctx, link)
	switch {
	case err != nil:
		return err
	case page.Status != http.StatusOK || submitted.Status != http.StatusOK:
		return fmt.Errorf("link %s: page %d, form %d, want 200 and 200: %.200s", link, page.Status, submitted.Status, submitted.Body)
	}
	return nil
}

// CloseIdle closes the idle connections (between backends).
func (cl *Client) CloseIdle() { cl.http.HTTP.CloseIdleConnections() }
