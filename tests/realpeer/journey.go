//go:build realpeer

package realpeer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// JourneyStep is one JSON line that js/journey.mjs prints.
type JourneyStep struct {
	Step string `json:"step"`
	OK   bool   `json:"ok"`
	// MS is how long the step took, in milliseconds.
	MS     int64           `json:"ms"`
	Result json.RawMessage `json:"result"`
	Error  *JourneyError   `json:"error"`
}

// JourneyError is how journey.mjs describes a failed step (a MatrixError
// from the SDK carries HTTPStatus, Errcode and Data).
type JourneyError struct {
	Name       string          `json:"name"`
	Message    string          `json:"message"`
	HTTPStatus int             `json:"httpStatus"`
	Errcode    string          `json:"errcode"`
	Data       json.RawMessage `json:"data"`
}

// JourneyOptions are journey.mjs's options (see the top of that file).
type JourneyOptions struct {
	// BaseURL is where the client sends everything: nginx.
	BaseURL string
	// User and Password log the client in.
	User, Password string
	// Email is the address the journey adds, binds and deletes.
	Email string
	// PhoneCountry and PhoneNumber are the phone number the journey adds and
	// deletes, as a user enters it: a country ("GB") and the number in its
	// national format.
	PhoneCountry, PhoneNumber string
	// IdentityServerURL is the client's identity server (its id_server is
	// this without the scheme).
	IdentityServerURL string
	// ControlURL is the test's control endpoint (the protocol is at the top
	// of journey.mjs).
	ControlURL string
	// Steps picks the journey: "" or "journey" (STEPS), "discovery"
	// (DISCOVERY_STEPS).
	Steps string
}

// RunJourney runs js/journey.mjs with node (the password goes in the
// environment, not on the command line) and returns its steps in order. When
// a step fails, the steps up to it come back with an error naming it.
func RunJourney(ctx context.Context, env Env, opts JourneyOptions) ([]JourneyStep, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, env.Node, filepath.Join(env.JSDir, "journey.mjs"),
		"--base-url", opts.BaseURL, "--user", opts.User, "--email", opts.Email,
		"--phone-country", opts.PhoneCountry, "--phone-number", opts.PhoneNumber,
		"--identity-server", opts.IdentityServerURL, "--control", opts.ControlURL)
	if opts.Steps != "" {
		cmd.Args = append(cmd.Args, "--steps", opts.Steps)
	}
	cmd.Dir = env.JSDir
	cmd.Env = append(os.Environ(), "JOURNEY_PASSWORD="+opts.Password)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	runErr := cmd.Run()
	var steps []JourneyStep
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s JourneyStep
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			return steps, fmt.Errorf("journey printed a line that is not a step: %q: %w", sc.Text(), err)
		}
		steps = append(steps, s)
	}
	if err := sc.Err(); err != nil {
		return steps, fmt.Errorf("read journey output: %w", err)
	}
	if n := len(steps); n > 0 && !steps[n-1].OK {
		return steps, fmt.Errorf("journey step %s failed: %+v", steps[n-1].Step, steps[n-1].Error)
	}
	if runErr != nil {
		return steps, fmt.Errorf("run journey.mjs: %w\n%s", runErr, stderr.String())
	}
	return steps, nil
}
