//go:build realpeer

package realpeer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/threepidd/threepidd/tests/support"
)

// env is what setup.sh installed, shared by every test.
var env Env

func TestMain(m *testing.M) {
	// threepidd runs in-process: its logs are noise in the test output
	// unless asked for.
	if os.Getenv("THREEPIDD_TEST_VERBOSE") == "" {
		slog.SetDefault(slog.New(slog.DiscardHandler))
	}
	start := time.Now()
	var err error
	if env, err = Setup(); err != nil {
		fmt.Fprintln(os.Stderr, "realpeer setup:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "realpeer setup took %v\n", time.Since(start).Round(time.Millisecond))
	os.Exit(support.RunTests(m))
}

// mustRegister registers localpart on d with password, or fails the test.
func mustRegister(ctx context.Context, t *testing.T, d *Dendrite, localpart, password string) User {
	t.Helper()
	u, err := d.Register(ctx, localpart, password)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
