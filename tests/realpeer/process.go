//go:build realpeer

package realpeer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// readyTimeout bounds how long a peer may take to answer its first request.
	readyTimeout = 60 * time.Second
	// stopTimeout bounds how long a peer may take to exit after SIGTERM.
	stopTimeout = 10 * time.Second
	// pollInterval is how often readiness is polled.
	pollInterval = 50 * time.Millisecond
)

// process is a peer started for one test, its output in log files.
type process struct {
	name string
	cmd  *exec.Cmd
	// logs are the files to show when the peer fails: its stdout/stderr
	// capture first, then any log it writes itself.
	logs   []string
	exited chan struct{}
	err    error // cmd.Wait's result, set before exited closes
}

// startProcess starts cmd with stdout and stderr in outPath and stops it when
// the test ends. extraLogs are further files worth showing on failure.
func startProcess(t testing.TB, name string, cmd *exec.Cmd, outPath string, extraLogs ...string) (*process, error) {
	out, err := os.Create(outPath)
	if err != nil {
		return nil, fmt.Errorf("create %s output file: %w", name, err)
	}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logs: append([]string{outPath}, extraLogs...), exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Errorf("%v\n%s", err, p.logTail())
		}
	})
	return p, nil
}

// stop asks the peer to exit (SIGTERM), kills it after stopTimeout, and
// reports a peer that had already died on its own.
func (p *process) stop() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited before the test ended: %v", p.name, p.err)
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(stopTimeout):
		if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("kill %s: %w", p.name, err)
		}
		<-p.exited
		return fmt.Errorf("%s did not exit within %v of SIGTERM", p.name, stopTimeout)
	}
}

// waitHTTP polls url until it answers with any HTTP status, the peer exits,
// or readyTimeout passes.
func (p *process) waitHTTP(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", p.name, err)
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited while starting: %v\n%s", p.name, p.err, p.logTail())
		case <-ctx.Done():
			return fmt.Errorf("%s not answering %s after %v: %w\n%s", p.name, url, readyTimeout, ctx.Err(), p.logTail())
		case <-tick.C:
		}
	}
}

// logTail returns the last lines of each of the peer's log files.
func (p *process) logTail() string {
	const maxLines = 40
	var b strings.Builder
	for _, path := range p.logs {
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(&b, "--- %s: %v\n", path, err)
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		lines = lines[max(0, len(lines)-maxLines):]
		fmt.Fprintf(&b, "--- %s (last %d lines)\n%s\n", path, len(lines), strings.Join(lines, "\n"))
	}
	return b.String()
}

// freePort asks the OS for a free TCP port on 127.0.0.1, for a peer that
// takes its port on the command line rather than binding :0 itself.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
