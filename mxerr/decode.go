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

// Required returns M_MISSING_PARAM naming the first absent parameter.
// Pairs are (name, present).
func Required(pairs ...any) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if present, _ := pairs[i+1].(bool); !present {
			return MissingParam.WithMessage("Missing parameter: %s", pairs[i])
		}
	}
	return nil
}

// CheckLength rejects a string parameter longer than max bytes with
// M_INVALID_PARAM.
func CheckLength(name, v string, max int) error {
	if len(v) > max {
		return InvalidParam.WithMessage("%s is too long", name)
	}
	return nil
}
