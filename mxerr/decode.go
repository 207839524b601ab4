package mxerr

import (
	"bytes"
	"encoding/json"
	"errors"
)

// UnmarshalObject decodes body, which must be a JSON object, into v, with Matrix
// errors: M_NOT_JSON if it is not JSON, M_BAD_JSON if it is JSON but not an
// object (as Synapse answers) or a field has the wrong type (naming the field).
func UnmarshalObject(body []byte, v any) error {
	trimmed := bytes.TrimSpace(body)
	if !json.Valid(trimmed) {
		return NotJSON.WithMessage("Content not JSON")
	}
	if trimmed[0] != '{' {
		return BadJSON.WithMessage("Content must be a JSON object")
	}
	if err := json.Unmarshal(trimmed, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return BadJSON.WithMessage("%s has the wrong type: %s expected", te.Field, te.Type)
		}
		return BadJSON.WithMessage("Malformed JSON: %v", err)
	}
	return nil
}
