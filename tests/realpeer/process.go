//go:build realpeer

package realpeer

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/threepidd/threepidd/tests/support"
)

const (
	// readyTimeout bounds how long a peer may take to answer its first request.
	readyTimeout = 60 * time.Second
	// stopTimeout bounds how long a peer may take to exit after SIGTERM.
	stopTimeout = 10 * time.Second
	// pollInterval is how often a test polls for what a peer does.
	pollInterval = 50 * time.Millisecond
)

// startPeer starts cmd with its stdout and stderr in outPath, stops it when
// the test ends, and waits until readyURL answers. extraLogs are further
// files worth showing when the peer fails (a log it writes itself).
func startPeer(ctx context.Context, t testing.TB, name string, cmd *exec.Cmd, outPath, readyURL string, extraLogs ...string) error {
	p, err := support.StartProcess(name, cmd, outPath, extraLogs...)
	if err != nil {
		return err
	}
	t.Cleanup(func() {
		if err := p.Stop(stopTimeout); err != nil {
			t.Errorf("%v\n%s", err, p.LogTail(40))
		}
	})
	return p.WaitHTTP(ctx, readyURL, readyTimeout)
}
