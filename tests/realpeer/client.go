//go:build realpeer

package realpeer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// requestTimeout bounds one request to a peer.
const requestTimeout = 30 * time.Second

var httpClient = &http.Client{Timeout: requestTimeout}

// Response is a peer's answer, body read in full.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Object decodes the body as a JSON object.
func (r Response) Object() (map[string]any, error) {
	var obj map[string]any
	if err := json.Unmarshal(r.Body, &obj); err != nil {
		return nil, fmt.Errorf("decode %d answer %q: %w", r.Status, r.Body, err)
	}
	return obj, nil
}

// Do sends method to baseURL+path with token as bearer (none when empty)
// and body as JSON (no body when nil; a json.RawMessage is sent as is).
func Do(ctx context.Context, baseURL, method, path, token string, body any) (Response, error) {
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return Response{}, fmt.Errorf("encode %s %s body: %w", method, path, err)
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, baseURL+path, reader)
	if err != nil {
		return Response{}, fmt.Errorf("build %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, fmt.Errorf("read %s %s answer: %w", method, path, err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// doJSON sends like Do and decodes a 200 answer into out; any other status is an error.
func doJSON(ctx context.Context, baseURL, method, path, token string, body, out any) error {
	resp, err := Do(ctx, baseURL, method, path, token, body)
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
