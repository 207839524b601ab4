package onupdate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/outbound"
)

const (
	// sendTimeout bounds Send with a nil client.
	sendTimeout = 10 * time.Second
	// maxAnswer bounds how much of the homeserver's answer is read.
	maxAnswer = 64 << 10
)

// Send posts b to <baseURL>/_matrix/federation/v1/3pid/onupdate of the
// homeserver destination, signed by origin (the identity server) with key, as
// an identity server adopting the proposal would (threepidd notify). A
// non-2xx answer is an *mxerr.Remote. client nil means a client with a 10 s
// timeout; whichever client, a redirect is the answer, never followed (a
// signed request goes to the URL it was signed for or nowhere).
func Send(ctx context.Context, client *http.Client, key *signingkey.Key, origin, destination, baseURL string, b Body) error {
	if client == nil {
		client = outbound.NewClient(outbound.NewTransport(), sendTimeout)
	}
	client = outbound.WithoutRedirects(client)
	body, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("send onupdate: %w", err)
	}
	target, err := url.Parse(strings.TrimRight(baseURL, "/") + Path)
	if err != nil {
		return fmt.Errorf("send onupdate: base URL: %w", err)
	}
	auth, err := federation.SignRequest(key, origin, destination, federation.DestinationField, http.MethodPost, target.RequestURI(), body)
	if err != nil {
		return fmt.Errorf("send onupdate: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("send onupdate: %w", err)
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("send onupdate to %s: %w", destination, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("send onupdate to %s: read answer: %w", destination, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("send onupdate to %s: %w", destination, mxerr.DecodeRemote(resp.StatusCode, answer))
	}
	return nil
}
