package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/threepidd/threepidd/outbound"
)

// maxDrain bounds how much of a webhook answer is read (and discarded) so the
// connection can be reused.
const maxDrain = 64 << 10

// SMSSender hands validation SMS to the operator's gateway webhook, which
// gets POST {"to": "<E.164 digits>", "token": "...", "text": "..."} and must
// answer 2xx once it has accepted the message.
type SMSSender struct {
	url    string
	client *http.Client
}

// smsRequest is the webhook's JSON body.
type smsRequest struct {
	To    string `json:"to"`
	Token string `json:"token"`
	Text  string `json:"text"`
}

// NewSMSSender returns a sender posting to webhookURL with client; a nil
// client means one with a 15-second timeout. Whichever client, a redirect is
// the gateway's answer (an error), never followed: the code goes to the
// configured URL or nowhere.
func NewSMSSender(webhookURL string, client *http.Client) *SMSSender {
	if client == nil {
		client = outbound.NewClient(outbound.NewTransport(), sendTimeout)
	}
	return &SMSSender{url: webhookURL, client: outbound.WithoutRedirects(client)}
}

// Send asks the gateway to send text, which carries token, to the phone
// number to (E.164 digits without "+"). Any answer but 2xx is an error.
func (s *SMSSender) Send(ctx context.Context, to, token, text string) error {
	body, err := json.Marshal(smsRequest{To: to, Token: token, Text: text})
	if err != nil {
		return fmt.Errorf("send sms to %s: encode: %w", to, err)
	}
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("send sms to %s: %w", to, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("send sms to %s: %w", to, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("send sms to %s: webhook answered %s", to, resp.Status)
	}
	return nil
}
