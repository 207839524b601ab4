package mxerr

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// maxRemoteMessage bounds the remote error message kept in a Remote.
const maxRemoteMessage = 512

// Remote is a non-2xx answer from another server (the homeserver, an identity
// server), with the Matrix errcode and error message when its body carried
// them. It is for logs and decisions, never rendered to a client as is.
type Remote struct {
	Status  int
	ErrCode string
	Message string
}

// Error implements error.
func (e *Remote) Error() string {
	s := fmt.Sprintf("remote answered %d %s", e.Status, http.StatusText(e.Status))
	if e.ErrCode != "" {
		s += ": " + e.ErrCode
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// DecodeRemote reads a remote answer's status and body: the errcode and error
// of a {"errcode","error"} body (both empty for a body that is not one), the
// message cut to 512 bytes.
func DecodeRemote(status int, body []byte) *Remote {
	var m struct {
		ErrCode string `json:"errcode"`
		Error   string `json:"error"`
	}
	if json.Unmarshal(body, &m) != nil {
		m.ErrCode, m.Error = "", ""
	}
	msg := m.Error
	if len(msg) > maxRemoteMessage {
		msg = strings.ToValidUTF8(msg[:maxRemoteMessage], "") + "..."
	}
	return &Remote{Status: status, ErrCode: m.ErrCode, Message: msg}
}

// ErrCode returns the errcode of a Matrix error body, "" when body is not one.
func ErrCode(body []byte) string { return DecodeRemote(0, body).ErrCode }
