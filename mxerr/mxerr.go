// Package mxerr is the one Matrix error type of threepidd and the one place that
// renders errors as HTTP responses.
//
// Handlers return errors; [Handler] turns an *Error into its status and
// {"errcode","error"} body, and any other error into a logged 500 M_UNKNOWN that
// says nothing about its cause.
package mxerr

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// Error is a Matrix error: an HTTP status, an errcode and a human-readable message.
type Error struct {
	Status  int    `json:"-"`
	ErrCode string `json:"errcode"`
	Message string `json:"error"`
	// RetryAfter, when non-zero, is sent as the Retry-After header and as
	// retry_after_ms in the body (M_LIMIT_EXCEEDED).
	RetryAfter time.Duration `json:"-"`
	// Extra holds additional body fields (e.g. soft_logout, success).
	Extra map[string]any `json:"-"`
}

// Error implements error.
func (e *Error) Error() string { return e.ErrCode + ": " + e.Message }

// WithMessage returns a copy of e with another message.
func (e *Error) WithMessage(format string, args ...any) *Error {
	c := *e
	if len(args) > 0 {
		c.Message = fmt.Sprintf(format, args...)
	} else {
		c.Message = format
	}
	return &c
}

// WithRetryAfter returns a copy of e carrying a Retry-After hint.
func (e *Error) WithRetryAfter(d time.Duration) *Error {
	c := *e
	c.RetryAfter = d
	return &c
}

// WithExtra returns a copy of e with one more body field.
func (e *Error) WithExtra(key string, value any) *Error {
	c := *e
	c.Extra = make(map[string]any, len(e.Extra)+1)
	for k, v := range e.Extra {
		c.Extra[k] = v
	}
	c.Extra[key] = value
	return &c
}

// Is reports whether target is an *Error with the same status and errcode, so
// errors.Is(err, mxerr.ThreepidInUse) works on copies made by WithMessage.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.ErrCode == e.ErrCode && t.Status == e.Status
}

// MarshalJSON renders the body: errcode, error and the extra fields.
func (e *Error) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(e.Extra)+3)
	for k, v := range e.Extra {
		m[k] = v
	}
	m["errcode"] = e.ErrCode
	m["error"] = e.Message
	if e.RetryAfter > 0 {
		m["retry_after_ms"] = e.RetryAfter.Milliseconds()
	}
	return json.Marshal(m)
}

func newErr(status int, code, msg string) *Error {
	return &Error{Status: status, ErrCode: code, Message: msg}
}

// Prebuilt errors. Use WithMessage for a specific text.
var (
	NotFound                   = newErr(http.StatusNotFound, "M_NOT_FOUND", "Not found")
	Unrecognized               = newErr(http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request")
	MethodNotAllowed           = newErr(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "Method not allowed")
	NotJSON                    = newErr(http.StatusBadRequest, "M_NOT_JSON", "Content not JSON")
	BadJSON                    = newErr(http.StatusBadRequest, "M_BAD_JSON", "Malformed JSON")
	MissingParam               = newErr(http.StatusBadRequest, "M_MISSING_PARAM", "Missing parameter")
	InvalidParam               = newErr(http.StatusBadRequest, "M_INVALID_PARAM", "Invalid parameter")
	TooLarge                   = newErr(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "Request body too large")
	MissingToken               = newErr(http.StatusUnauthorized, "M_MISSING_TOKEN", "Missing access token")
	UnknownToken               = newErr(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Unknown access token")
	Unauthorized               = newErr(http.StatusUnauthorized, "M_UNAUTHORIZED", "Unauthorized")
	Forbidden                  = newErr(http.StatusForbidden, "M_FORBIDDEN", "Forbidden")
	GuestAccessForbidden       = newErr(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is not allowed")
	LimitExceeded              = newErr(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "Too many requests")
	ThreepidInUse              = newErr(http.StatusBadRequest, "M_THREEPID_IN_USE", "Third-party identifier already in use")
	ThreepidAuthFailed         = newErr(http.StatusBadRequest, "M_THREEPID_AUTH_FAILED", "Third-party identifier has not been validated")
	ThreepidDenied             = newErr(http.StatusForbidden, "M_THREEPID_DENIED", "Third-party identifier is not allowed")
	ThreepidMediumNotSupported = newErr(http.StatusBadRequest, "M_THREEPID_MEDIUM_NOT_SUPPORTED", "This medium is not supported")
	ThreepidNotFound           = newErr(http.StatusBadRequest, "M_THREEPID_NOT_FOUND", "Third-party identifier not found")
	ServerNotTrusted           = newErr(http.StatusBadRequest, "M_SERVER_NOT_TRUSTED", "Untrusted identity server")
	TokenIncorrect             = newErr(http.StatusBadRequest, "M_TOKEN_INCORRECT", "Incorrect token").WithExtra("success", false)
	SessionExpired             = newErr(http.StatusBadRequest, "M_SESSION_EXPIRED", "Validation session expired").WithExtra("success", false)
	SessionNotValidated        = newErr(http.StatusBadRequest, "M_SESSION_NOT_VALIDATED", "Validation session not validated")
	NoValidSession             = newErr(http.StatusBadRequest, "M_NO_VALID_SESSION", "No valid session")
	Unknown                    = newErr(http.StatusInternalServerError, "M_UNKNOWN", "Internal server error")
	Unavailable                = newErr(http.StatusBadGateway, "M_UNKNOWN", "Upstream server unavailable")
	Timeout                    = newErr(http.StatusGatewayTimeout, "M_UNKNOWN", "Upstream server timed out")
)

// Raw is an upstream answer (e.g. the homeserver's 401 UIA body or a whoami 401
// with soft_logout) passed back to the client unchanged.
type Raw struct {
	Status int
	Body   []byte
	// Header holds upstream headers worth keeping (e.g. Retry-After).
	Header http.Header
}

// Error implements error.
func (r *Raw) Error() string { return "upstream answered " + strconv.Itoa(r.Status) }

// Write renders err on w. An *Error or *Raw (possibly wrapped) is written with
// its status; anything else is logged with the request and answered 500 M_UNKNOWN.
func Write(w http.ResponseWriter, r *http.Request, err error) {
	var raw *Raw
	if errors.As(err, &raw) {
		for k, vs := range raw.Header {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		WriteBody(w, raw.Status, raw.Body)
		return
	}
	var me *Error
	if !errors.As(err, &me) {
		slog.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		me = Unknown
	}
	if me.RetryAfter > 0 {
		secs := int((me.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	WriteJSON(w, me.Status, me)
}

// WriteJSON writes v as a JSON body with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}
	WriteBody(w, status, body)
}

// WriteBody writes body, JSON already encoded (a homeserver's answer relayed),
// with the given status.
func WriteBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Handler adapts a handler that returns an error into an http.Handler; the error,
// if any, is rendered with Write.
type Handler func(w http.ResponseWriter, r *http.Request) error

// ServeHTTP implements http.Handler.
func (h Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h(w, r); err != nil {
		Write(w, r, err)
	}
}
