package support

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pollInterval is how often a Process's output or HTTP endpoint is polled.
const pollInterval = 10 * time.Millisecond

// Process is a child process of a test, its stdout and stderr in a file.
type Process struct {
	name string
	cmd  *exec.Cmd
	// from is where this run's output starts in logs[0], the output file.
	from int64
	// logs are the files LogTail shows: the output file, then any log the
	// process writes itself.
	logs   []string
	exited chan struct{}
	err    error // cmd.Wait's result, set before exited closes
}

// StartProcess starts cmd with its stdout and stderr appended to the file
// out (created if need be; a test may append its own marks to it between
// runs). extraLogs are further files that LogTail shows, such as a log the
// process writes itself.
func StartProcess(name string, cmd *exec.Cmd, out string, extraLogs ...string) (*Process, error) {
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s output file: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s output file: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{name: name, cmd: cmd, from: st.Size(), logs: append([]string{out}, extraLogs...), exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	return p, nil
}

// PeakRSS is the process's peak resident set size in bytes (VmHWM of
// /proc/<pid>/status; Linux only).
func (p *Process) PeakRSS() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("read %s status: %w", p.name, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s VmHWM %q: %w", p.name, rest, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%s status has no VmHWM", p.name)
}

// ExitErr is cmd.Wait's result: nil after an exit with status 0. It must be
// called only once the process has exited (after Kill, or Stop).
func (p *Process) ExitErr() error {
	<-p.exited
	return p.err
}

// Kill sends SIGKILL and waits until the process is reaped.
func (p *Process) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Stop sends SIGTERM and waits up to timeout for the process to exit, then
// kills it. It fails when the process had exited before it was asked to, or
// did not exit in time; whatever its exit status, which ExitErr tells.
func (p *Process) Stop(timeout time.Duration) error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited before it was stopped: %v", p.name, p.err)
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.exited:
		return nil
	case <-timer.C:
		p.Kill()
		return fmt.Errorf("%s did not exit within %v of SIGTERM", p.name, timeout)
	}
}

// WaitHTTP polls url until it answers with any HTTP status; it fails when
// the process exits or timeout passes first.
func (p *Process) WaitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(5 * pollInterval)
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
			return fmt.Errorf("%s exited while starting: %v\n%s", p.name, p.err, p.LogTail(40))
		case <-ctx.Done():
			return fmt.Errorf("%s not answering %s after %v: %w\n%s", p.name, url, timeout, ctx.Err(), p.LogTail(40))
		case <-tick.C:
		}
	}
}

// WaitLine waits until the process writes a line that re matches (in this
// run's output) and returns re's submatches; it fails when the process exits
// or timeout passes first.
func (p *Process) WaitLine(re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		exited := false
		select {
		case <-p.exited:
			exited = true
		default:
		}
		out, err := p.output()
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(out, "\n") {
			if m := re.FindStringSubmatch(line); m != nil {
				return m, nil
			}
		}
		if exited {
			return nil, fmt.Errorf("%s exited without writing %q: %v", p.name, re, p.err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not write %q within %v", p.name, re, timeout)
		}
		time.Sleep(pollInterval)
	}
}

// output is what the process wrote to its output file so far in this run.
func (p *Process) output() (string, error) {
	f, err := os.Open(p.logs[0])
	if err != nil {
		return "", fmt.Errorf("read %s output: %w", p.name, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.NewSectionReader(f, p.from, 1<<62))
	if err != nil {
		return "", fmt.Errorf("read %s output: %w", p.name, err)
	}
	return string(data), nil
}

// LogTail returns the last n lines of each of the process's log files, each
// under a header naming it.
func (p *Process) LogTail(n int) string {
	var b strings.Builder
	for _, path := range p.logs {
		tail, err := Tail(path, n)
		if err != nil {
			fmt.Fprintf(&b, "--- %s: %v\n", path, err)
			continue
		}
		fmt.Fprintf(&b, "--- %s (last %d lines)\n%s\n", path, strings.Count(tail, "\n")+1, tail)
	}
	return b.String()
}

// Tail returns the last n lines of the file at path.
func Tail(path string, n int) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n"), nil
}
