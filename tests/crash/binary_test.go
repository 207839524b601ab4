package crash

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
)

// Limits of the process handling.
const (
	// startTimeout bounds a start until the binary logs that it listens (a
	// race build migrating a Postgres schema is the slow case).
	startTimeout = 60 * time.Second
	// stopTimeout bounds a graceful stop (SIGTERM), which waits for
	// in-flight requests up to server.ShutdownTimeout.
	stopTimeout = 20 * time.Second
)

// Names the fixture configures.
const (
	serverName = "hs.test"
	isName     = "id1.test"
	adminToken = "crash-admin-token"
)

var (
	buildOnce sync.Once
	buildDir  string
	binary    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// threepiddBinary builds cmd/threepidd once per test run (with -race when
// this package runs under -race) and returns its path.
func threepiddBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		began := time.Now()
		if buildDir, buildErr = os.MkdirTemp("", "threepidd-crash-"); buildErr != nil {
			return
		}
		binary = filepath.Join(buildDir, "threepidd")
		args := []string{"build", "-o", binary}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/threepidd/threepidd/cmd/threepidd")
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		}
		out, err := exec.Command(goTool, args...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		t.Logf("built threepidd (race %v) in %v", raceEnabled, time.Since(began).Round(time.Millisecond))
	})
	if buildErr != nil {
		t.Fatalf("build threepidd: %v", buildErr)
	}
	return binary
}

// childEnv is the environment of the binary: ours without the THREEPIDD_
// overrides (a stray one would change the configuration under test).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, config.EnvPrefix) && !strings.HasPrefix(kv, config.EnvTestPrefix) {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// process is one run of the binary.
type process struct {
	cmd       *exec.Cmd
	listening chan string   // the address, once logged
	exited    chan struct{} // closed once the process is reaped
	waitErr   error         // set before exited is closed
}

var listeningRE = regexp.MustCompile(`msg="threepidd listening" addr=(\S+)`)

// startProcess runs the binary with cfgPath, appending its output to log.
func startProcess(bin, cfgPath string, log io.Writer) (*process, error) {
	cmd := exec.Command(bin, "-config", cfgPath)
	cmd.Env = childEnv()
	cmd.Stdout = log
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, listening: make(chan string, 1), exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(log, line)
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				select {
				case p.listening <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(log, stderr) // an over-long line: keep the rest
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// waitListening returns the address the process listens on.
func (p *process) waitListening() (string, error) {
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case addr := <-p.listening:
		return addr, nil
	case <-p.exited:
		return "", fmt.Errorf("threepidd exited before listening: %v", p.waitErr)
	case <-timer.C:
		p.kill()
		return "", fmt.Errorf("threepidd did not listen within %v", startTimeout)
	}
}

// kill sends SIGKILL and reaps the process.
func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop sends SIGTERM and waits for a clean exit (status 0).
func (p *process) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-p.exited:
		return p.waitErr
	case <-timer.C:
		p.kill()
		return fmt.Errorf("threepidd did not stop within %v of SIGTERM", stopTimeout)
	}
}

// syncWriter serialises writes to w (the output of a process and the test's
// own marks).
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

// fixture is threepidd run as a binary against the fakes: a homeserver, one
// identity server (onupdate: true), an SMTP sink, and a store.
type fixture struct {
	t       *testing.T
	bin     string
	dir     string
	Backend storagetest.Backend
	HS      *fakes.Homeserver
	SMTP    *fakes.SMTPSink
	IS      *fakes.IdentityServer
	Key     *signingkey.Key

	logPath string
	logFile *os.File
	log     *syncWriter

	// listen is the address configured: port 0 at first, then pinned to the
	// port of the first start so that links sent before a restart still work.
	listen string
	// URL is the base URL of the running process.
	URL    string
	proc   *process
	Starts int
}

// newFixture starts the fakes and writes the signing key; start runs the binary.
func newFixture(t *testing.T, b storagetest.Backend) *fixture {
	t.Helper()
	f := &fixture{t: t, bin: threepiddBinary(t), dir: t.TempDir(), Backend: b, listen: "127.0.0.1:0"}
	f.HS = fakes.NewHomeserver(t, serverName)
	f.SMTP = fakes.NewSMTPSink(t)
	f.IS = fakes.NewIdentityServer(t, isName)
	key, err := signingkey.Generate("")
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	f.Key = key
	f.IS.TrustHomeserver(serverName, string(key.ID), key.PublicKey())
	var kb bytes.Buffer
	if err := key.WriteSynapse(&kb); err != nil {
		t.Fatalf("write key: %v", err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "signing.key"), kb.Bytes(), 0o600); err != nil {
		t.Fatalf("write key: %v", err)
	}
	f.logPath = filepath.Join(f.dir, "threepidd.log")
	if f.logFile, err = os.Create(f.logPath); err != nil {
		t.Fatalf("create log: %v", err)
	}
	f.log = &syncWriter{w: f.logFile}
	t.Cleanup(func() {
		if f.proc != nil {
			f.proc.kill()
		}
		f.logFile.Close()
		if t.Failed() {
			t.Logf("threepidd output (last 60 lines of %s):\n%s", f.logPath, f.logTail(60))
		}
	})
	return f
}

// writeConfig writes the configuration for the listen address f.listen.
func (f *fixture) writeConfig() string {
	f.t.Helper()
	var y strings.Builder
	fmt.Fprintf(&y, "server_name: %s\nlisten: %s\nsigning_key_path: %q\nadmin_token: %s\n",
		serverName, f.listen, filepath.Join(f.dir, "signing.key"), adminToken)
	fmt.Fprintf(&y, "database: {driver: %s, dsn: %q}\n", f.Backend.Driver, f.Backend.DSN)
	fmt.Fprintf(&y, "homeserver: {url: %q, kind: synapse, token_cache_ttl: 2s}\n", f.HS.URL())
	fmt.Fprintf(&y, "email: {smtp_host: 127.0.0.1, smtp_port: %d, from: \"threepidd@hs.test\"}\n", f.SMTP.Port())
	y.WriteString("ratelimit: {requesttoken_per_ip: {per_second: 0}, requesttoken_per_address: {per_second: 0}, onupdate_per_server: {per_second: 0}}\n")
	fmt.Fprintf(&y, "identity_servers:\n  - {server_name: %s, base_url: %q, onupdate: true}\n", isName, f.IS.URL())
	path := filepath.Join(f.dir, "threepidd.yaml")
	if err := os.WriteFile(path, []byte(y.String()), 0o600); err != nil {
		f.t.Fatalf("write config: %v", err)
	}
	return path
}

// launch starts the binary without waiting for it to listen.
func (f *fixture) launch() {
	f.t.Helper()
	if f.proc != nil {
		f.t.Fatal("launch while threepidd runs")
	}
	f.Starts++
	fmt.Fprintf(f.log, "=== test: start %d (listen %s)\n", f.Starts, f.listen)
	p, err := startProcess(f.bin, f.writeConfig(), f.log)
	if err != nil {
		f.t.Fatal(err)
	}
	f.proc = p
}

// start starts the binary and waits until it listens. The port of the first
// start is reused; should it be taken meanwhile, a new one is used (the test
// rewrites validation links to the current address).
func (f *fixture) start() {
	f.t.Helper()
	f.launch()
	addr, err := f.proc.waitListening()
	if err != nil && f.listen != "127.0.0.1:0" && strings.Contains(f.logTail(5), "listen on") {
		f.t.Logf("port of %s taken; moving to a new port", f.listen)
		f.proc, f.listen = nil, "127.0.0.1:0"
		f.launch()
		addr, err = f.proc.waitListening()
	}
	if err != nil {
		f.proc = nil
		f.t.Fatal(err)
	}
	f.listen, f.URL = addr, "http://"+addr
}

// kill sends SIGKILL to the running binary.
func (f *fixture) kill() {
	if f.proc == nil {
		return
	}
	f.proc.kill()
	f.proc = nil
	fmt.Fprintf(f.log, "=== test: SIGKILL\n")
}

// stop stops the running binary gracefully and requires a clean exit.
func (f *fixture) stop() {
	f.t.Helper()
	if f.proc == nil {
		return
	}
	err := f.proc.stop()
	f.proc = nil
	if err != nil {
		f.t.Fatalf("graceful stop: %v", err)
	}
}

// logTail returns the last n lines the binary wrote.
func (f *fixture) logTail(n int) string {
	data, err := os.ReadFile(f.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// checkLog fails the test if the binary ever panicked or the race detector
// reported anything.
func (f *fixture) checkLog() {
	f.t.Helper()
	data, err := os.ReadFile(f.logPath)
	if err != nil {
		f.t.Fatalf("read log: %v", err)
	}
	for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:", `msg="handler panic"`} {
		if i := bytes.Index(data, []byte(bad)); i >= 0 {
			end := min(len(data), i+2000)
			f.t.Errorf("threepidd logged %q:\n%s", bad, data[i:end])
		}
	}
}
