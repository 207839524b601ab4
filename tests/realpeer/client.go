//go:build realpeer

package realpeer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/threepidd/threepidd/tests/support"
)

// requestTimeout bounds one request to a peer.
const requestTimeout = 30 * time.Second

// peers sends the tests' requests to the peers.
var peers = support.Client{HTTP: &http.Client{Timeout: requestTimeout}}

// DoJSON sends method to baseURL+path with token as bearer (none when
// empty) and body as JSON (none when nil), and decodes a 200 answer into
// out; any other status is an error.
func DoJSON(ctx context.Context, baseURL, method, path, token string, body, out any) error {
	resp, err := peers.Do(ctx, method, baseURL+path, token, body)
	if err != nil {
		return err
	}
	if resp.Status != http.StatusOK {
		return fmt.Errorf("%s %s: status %d: %s", method, path, resp.Status, resp.Body)
	}
	if err := json.Unmarshal(resp.Body, out); err != nil {
		return fmt.Errorf("decode %s %s answer: %w", method, path, err)
	}
	return nil
}
