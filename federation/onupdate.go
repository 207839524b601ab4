package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/threepidd/threepidd/federation/signingkey"
)

// OnUpdatePath is the federation endpoint through which an identity server
// tells a homeserver that a binding was taken over or deleted.
const OnUpdatePath = "/_matrix/federation/v1/3pid/onupdate"

const (
	// maxErrorBody bounds how much of a remote answer is read.
	maxErrorBody = 64 << 10
	// maxRemoteMessage bounds the remote error message kept in a RemoteError.
	maxRemoteMessage = 512
)

// OnUpdate is the body of POST /_matrix/federation/v1/3pid/onupdate.
type OnUpdate struct {
	Threepid string `json:"threepid"`
	Medium   string `json:"medium,omitempty"`
	Deleted  bool   `json:"deleted"`
	MXID     string `json:"mxid,omitempty"`
}

// RemoteError is a non-2xx answer from a remote server, with the Matrix
// errcode and error message when the body carried them.
type RemoteError struct {
	Status  int
	ErrCode string
	Message string
}

// Error implements error.
func (e *RemoteError) Error() string {
	s := fmt.Sprintf("remote answered %d %s", e.Status, http.StatusText(e.Status))
	if e.ErrCode != "" {
		s += ": " + e.ErrCode
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// remoteError builds a RemoteError from a status and a (bounded) body.
func remoteError(status int, body []byte) *RemoteError {
	var m struct {
		ErrCode string `json:"errcode"`
		Error   string `json:"error"`
	}
	_ = json.Unmarshal(body, &m) // a body that is not a Matrix error leaves both empty
	return &RemoteError{Status: status, ErrCode: m.ErrCode, Message: truncate(m.Error, maxRemoteMessage)}
}

// SendOnUpdate posts u to <baseURL>/_matrix/federation/v1/3pid/onupdate of the
// homeserver destination, signed by origin (the identity server) with key. A
// non-2xx answer is a *RemoteError. client nil means a client with a 10 s
// timeout.
func SendOnUpdate(ctx context.Context, client *http.Client, key *signingkey.Key, origin, destination, baseURL string, u OnUpdate) error {
	if client == nil {
		client = &http.Client{Timeout: fetchTimeout}
	}
	body, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("send onupdate: %w", err)
	}
	target, err := url.Parse(strings.TrimRight(baseURL, "/") + OnUpdatePath)
	if err != nil {
		return fmt.Errorf("send onupdate: base URL: %w", err)
	}
	auth, err := SignRequest(key, origin, destination, DestinationField, http.MethodPost, target.RequestURI(), body)
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
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if err != nil {
		return fmt.Errorf("send onupdate to %s: read answer: %w", destination, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("send onupdate to %s: %w", destination, remoteError(resp.StatusCode, answer))
	}
	return nil
}
