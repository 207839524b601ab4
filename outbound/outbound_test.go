package outbound_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/threepidd/threepidd/internal/requestid"
	"github.com/threepidd/threepidd/outbound"
)

// TestTransportHeaders: the pooled transport, and SetHeaders on a request
// built for it, give a request threepidd's User-Agent unless it has one, and
// the request ID of its context unless it has one; the request the caller
// holds is left as it was.
func TestTransportHeaders(t *testing.T) {
	got := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got <- r.Header }))
	t.Cleanup(srv.Close)
	client := outbound.NewClient(outbound.NewTransport(), 0)
	t.Cleanup(client.CloseIdleConnections)

	for _, tc := range []struct {
		name           string
		id             string            // in the request's context
		header         map[string]string // set on the request
		setHeaders     bool              // outbound.SetHeaders before sending
		wantUA, wantID string
	}{
		{name: "bare", wantUA: "threepidd"},
		{name: "with an ID", id: "req-1", wantUA: "threepidd", wantID: "req-1"},
		{name: "own headers kept", id: "req-2", header: map[string]string{"User-Agent": "Element/1.0", "X-Request-ID": "mine"}, wantUA: "Element/1.0", wantID: "mine"},
		{name: "SetHeaders", id: "req-3", setHeaders: true, wantUA: "threepidd", wantID: "req-3"},
		{name: "SetHeaders keeps own", id: "req-4", header: map[string]string{"User-Agent": "Element/1.0"}, setHeaders: true, wantUA: "Element/1.0", wantID: "req-4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.id != "" {
				ctx = requestid.NewContext(ctx, tc.id)
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			if tc.setHeaders {
				outbound.SetHeaders(req)
			}
			before := req.Header.Clone()
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			h := <-got
			if h.Get("User-Agent") != tc.wantUA || h.Get("X-Request-ID") != tc.wantID {
				t.Errorf("sent User-Agent %q, X-Request-ID %q; want %q, %q", h.Get("User-Agent"), h.Get("X-Request-ID"), tc.wantUA, tc.wantID)
			}
			if len(req.Header) != len(before) || req.Header.Get("User-Agent") != before.Get("User-Agent") || req.Header.Get("X-Request-ID") != before.Get("X-Request-ID") {
				t.Errorf("the transport changed the caller's request: %v, was %v", req.Header, before)
			}
		})
	}
}
