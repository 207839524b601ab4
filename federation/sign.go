package federation

import (
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/threepidd/threepidd/federation/signingkey"
)

const (
	// DestinationField is the signed field naming the receiver in ordinary
	// federation requests (and in onupdate).
	DestinationField = "destination"
	// DestinationISField is the field Synapse signs, and Sydent checks, instead
	// of "destination" on identity-server unbind requests.
	DestinationISField = "destination_is"
)

// requestObject is the JSON object a federation request signature covers:
// {method, uri, origin, <destinationField>: destination, content}. content is
// left out when empty, as for requests without a body.
func requestObject(method, uri, origin, destinationField, destination string, content []byte) map[string]any {
	obj := map[string]any{
		"method":         method,
		"uri":            uri,
		"origin":         origin,
		destinationField: destination,
	}
	if len(content) > 0 {
		obj["content"] = json.RawMessage(content)
	}
	return obj
}

// SignRequest returns the Authorization header value for a request from origin
// to destination, signed with key. destinationField is DestinationField
// ("destination": ordinary federation, onupdate) or DestinationISField
// ("destination_is": Sydent-style unbind, which signs {method, uri, origin,
// destination_is, content}); the header's destination= parameter is always
// destination. uri is the request's path and query; content is its JSON body,
// or empty for none.
func SignRequest(key *signingkey.Key, origin, destination, destinationField, method, uri string, content []byte) (string, error) {
	if destinationField != DestinationField && destinationField != DestinationISField {
		return "", fmt.Errorf("sign request: destination field %q is neither %q nor %q", destinationField, DestinationField, DestinationISField)
	}
	for _, f := range []struct{ name, value string }{{"origin", origin}, {"destination", destination}, {"key ID", string(key.ID)}} {
		if !headerSafe(f.value) {
			return "", fmt.Errorf("sign request: %s %q cannot go in an X-Matrix header", f.name, f.value)
		}
	}
	if len(content) > 0 && !json.Valid(content) {
		return "", fmt.Errorf("sign request %s %s: content is not JSON", method, uri)
	}
	raw, err := json.Marshal(requestObject(method, uri, origin, destinationField, destination, content))
	if err != nil {
		return "", fmt.Errorf("sign request %s %s: %w", method, uri, err)
	}
	signed, err := gomatrixserverlib.SignJSON(origin, key.ID, key.Private, raw)
	if err != nil {
		return "", fmt.Errorf("sign request %s %s: %w", method, uri, err)
	}
	var out struct {
		Signatures map[string]map[gomatrixserverlib.KeyID]string `json:"signatures"`
	}
	if err := json.Unmarshal(signed, &out); err != nil {
		return "", fmt.Errorf("sign request %s %s: read signature: %w", method, uri, err)
	}
	return XMatrix{
		Origin:      origin,
		Destination: destination,
		KeyID:       string(key.ID),
		Signature:   out.Signatures[origin][key.ID],
	}.String(), nil
}

// headerSafe reports whether s can be sent as an X-Matrix parameter that even
// naive parsers (Sydent splits on spaces, commas and '=' and strips quotes)
// read back unchanged: non-empty visible ASCII without quotes, backslashes or
// commas.
func headerSafe(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isBareChar(s[i]) {
			return false
		}
	}
	return true
}
