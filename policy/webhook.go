package policy

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/metrics"
	"github.com/threepidd/threepidd/outbound"
)

// SignatureHeader carries the hex HMAC-SHA256 of a webhook body under the
// shared secret, on policy and event webhooks alike.
const SignatureHeader = "X-Threepidd-Signature"

// RuleWebhook is the Decision.Rule of blocks by the policy webhook.
const RuleWebhook = "webhook"

// Bounds on what the webhook may answer.
const (
	maxAnswerBytes = 64 << 10
	maxReasonBytes = 500
)

var webhookFailures = metrics.Factory.NewCounterVec(metrics.CounterOpts("policy_webhook_failures_total",
	"Policy webhook calls without a usable answer, by outcome: blocked (fail closed) or allowed (fail_open)."), []string{"outcome"})

// Sign returns the value of SignatureHeader for body: the hex HMAC-SHA256 of
// body under secret.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// VerifySignature reports whether header (the value of SignatureHeader) is
// the signature of body under secret. The comparison takes constant time.
// Webhook receivers call it on the raw body before decoding it.
func VerifySignature(secret string, body []byte, header string) bool {
	got, err := hex.DecodeString(strings.TrimSpace(header))
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

// Webhook asks an HTTP service about each change (see the package
// documentation for the protocol). It never returns an error: a call without
// a usable answer blocks the change, or allows it when FailOpen is set.
type Webhook struct {
	URL, Secret string
	// Timeout bounds each call (config.DefaultPolicyTimeout when 0).
	Timeout  time.Duration
	FailOpen bool
	Client   *http.Client
}

// NewWebhook returns the webhook of cfg, called with client
// (http.DefaultClient when nil) without following redirects: the webhook's
// answer is the configured URL's own, and a 3xx is not a 2xx. The URL must be
// absolute http(s).
func NewWebhook(cfg config.PolicyWebhook, client *http.Client) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("url: %q is not an http(s) URL", cfg.URL)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("timeout: %s is negative", cfg.Timeout)
	}
	if client == nil {
		client = http.DefaultClient
	}
	return &Webhook{URL: cfg.URL, Secret: cfg.Secret, Timeout: cfg.Timeout, FailOpen: cfg.FailOpen, Client: outbound.WithoutRedirects(client)}, nil
}

// CheckUserThreepid implements Checker.
func (w *Webhook) CheckUserThreepid(ctx context.Context, c Change) (Decision, error) {
	return w.ask(ctx, c), nil
}

// CheckBinding implements Checker.
func (w *Webhook) CheckBinding(ctx context.Context, c Change) (Decision, error) {
	return w.ask(ctx, c), nil
}

// answer is the webhook's reply; Allow is required.
type answer struct {
	Allow  *bool  `json:"allow"`
	Reason string `json:"reason"`
}

func (w *Webhook) ask(ctx context.Context, c Change) Decision {
	a, err := w.call(ctx, c)
	if err != nil {
		return w.failed(ctx, c, err)
	}
	if *a.Allow {
		return Allowed
	}
	reason := strings.ToValidUTF8(strings.TrimSpace(a.Reason), "")
	if len(reason) > maxReasonBytes {
		reason = strings.ToValidUTF8(reason[:maxReasonBytes], "")
	}
	if reason == "" {
		reason = "refused by the policy service"
	}
	return Decision{Rule: RuleWebhook, Reason: reason}
}

// callError is a call without a usable answer: Reason is what users are
// told (never the URL), Cause what the log says.
type callError struct {
	Reason string
	Cause  error
}

func (e *callError) Error() string {
	if e.Cause == nil {
		return e.Reason
	}
	return e.Reason + ": " + e.Cause.Error()
}

func (w *Webhook) call(ctx context.Context, c Change) (answer, *callError) {
	body, err := json.Marshal(c)
	if err != nil {
		return answer{}, &callError{"the change could not be encoded", err}
	}
	timeout := w.Timeout
	if timeout == 0 {
		timeout = config.DefaultPolicyTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	timedOut := &callError{Reason: "the policy service did not answer within " + timeout.String()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return answer{}, &callError{"the policy service could not be reached", err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, Sign(w.Secret, body))
	resp, err := w.Client.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return answer{}, timedOut
		}
		return answer{}, &callError{"the policy service could not be reached", err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return answer{}, timedOut
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return answer{}, &callError{Reason: fmt.Sprintf("the policy service answered HTTP %d", resp.StatusCode)}
	case err != nil:
		return answer{}, &callError{"the policy service's answer could not be read", err}
	case len(data) > maxAnswerBytes:
		return answer{}, &callError{Reason: "the policy service's answer is too large"}
	}
	var a answer
	if err := json.Unmarshal(data, &a); err != nil || a.Allow == nil {
		return answer{}, &callError{Reason: "the policy service's answer is not {\"allow\": true|false}", Cause: err}
	}
	return a, nil
}

// failed decides for a call without a usable answer: blocked, or allowed
// with fail_open.
func (w *Webhook) failed(ctx context.Context, c Change, err *callError) Decision {
	if w.FailOpen {
		webhookFailures.WithLabelValues("allowed").Inc()
		slog.WarnContext(ctx, "policy webhook failed; allowing (fail_open)", "callback", c.Callback, "op", c.Op, "err", err)
		return Allowed
	}
	webhookFailures.WithLabelValues("blocked").Inc()
	slog.WarnContext(ctx, "policy webhook failed; blocking", "callback", c.Callback, "op", c.Op, "err", err)
	return Decision{Rule: RuleWebhook, Reason: err.Reason}
}
