package crash

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/support"
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
	// hsAdminToken is the fake Synapse's admin token: the binary runs with
	// the mirror, as a Synapse deployment does.
	hsAdminToken = "crash-synapse-admin-token"
)

func TestMain(m *testing.M) { os.Exit(support.RunTests(m)) }

// listeningRE matches the line threepidd logs once it listens.
var listeningRE = regexp.MustCompile(`msg="threepidd listening" addr=(\S+)`)

// fixture is threepidd run as a binary against the fakes: a homeserver, one
// identity server (onupdate: true), an SMTP sink, and a store.
type fixture struct {
	t       *testing.T
	dir     string
	Backend storagetest.Backend
	HS      *fakes.Homeserver
	SMTP    *fakes.SMTPSink
	IS      *fakes.IdentityServer
	Key     *signingkey.Key

	// logPath is the binary's output, across its runs, with the test's
	// marks between them.
	logPath string

	// listen is the address configured: port 0 at first, then pinned to the
	// port of the first start so that links sent before a restart still work.
	listen string
	// URL is the base URL of the running process.
	URL    string
	proc   *support.Process
	Starts int
}

// newFixture starts the fakes and writes the signing key; start runs the binary.
func newFixture(t *testing.T, b storagetest.Backend) *fixture {
	t.Helper()
	support.ThreepiddBinary(t) // built before the fakes start
	f := &fixture{t: t, dir: t.TempDir(), Backend: b, listen: "127.0.0.1:0"}
	f.HS = fakes.NewHomeserver(t, serverName)
	f.HS.SetAdminToken(hsAdminToken)
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
	t.Cleanup(func() {
		if f.proc != nil {
			f.proc.Kill()
		}
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
	fmt.Fprintf(&y, "homeserver: {url: %q, kind: synapse, token_cache_ttl: 2s, admin_token: %s}\n", f.HS.URL(), hsAdminToken)
	fmt.Fprintf(&y, "email: {smtp_host: 127.0.0.1, smtp_port: %d, from: \"threepidd@hs.test\"}\n", f.SMTP.Port())
	y.WriteString("ratelimit: {requesttoken_per_ip: {per_second: 0}, requesttoken_per_address: {per_second: 0}, onupdate_per_server: {per_second: 0}, unbind_per_user: {per_second: 0}}\n")
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
	f.mark("start %d (listen %s)", f.Starts, f.listen)
	p, err := support.StartProcess("threepidd", support.ThreepiddCommand(context.Background(), f.t, "-config", f.writeConfig()), f.logPath)
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
	addr, err := f.waitListening()
	if err != nil && f.listen != "127.0.0.1:0" && strings.Contains(f.logTail(5), "listen on") {
		f.t.Logf("port of %s taken; moving to a new port", f.listen)
		f.proc, f.listen = nil, "127.0.0.1:0"
		f.launch()
		addr, err = f.waitListening()
	}
	if err != nil {
		f.proc = nil
		f.t.Fatal(err)
	}
	f.listen, f.URL = addr, "http://"+addr
}

// waitListening returns the address the binary listens on; one that does
// not listen within startTimeout is killed.
func (f *fixture) waitListening() (string, error) {
	m, err := f.proc.WaitLine(listeningRE, startTimeout)
	if err != nil {
		f.proc.Kill()
		return "", err
	}
	return m[1], nil
}

// mark appends a line of the test's to the binary's output.
func (f *fixture) mark(format string, args ...any) {
	f.t.Helper()
	out, err := os.OpenFile(f.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err == nil {
		_, err = fmt.Fprintf(out, "=== test: "+format+"\n", args...)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		f.t.Fatalf("mark the log: %v", err)
	}
}

// kill sends SIGKILL to the running binary.
func (f *fixture) kill() {
	if f.proc == nil {
		return
	}
	f.proc.Kill()
	f.proc = nil
	f.mark("SIGKILL")
}

// stop stops the running binary gracefully and requires a clean exit.
func (f *fixture) stop() {
	f.t.Helper()
	if f.proc == nil {
		return
	}
	p := f.proc
	f.proc = nil
	err := p.Stop(stopTimeout)
	if err == nil {
		err = p.ExitErr()
	}
	if err != nil {
		f.t.Fatalf("graceful stop: %v", err)
	}
}

// logTail returns the last n lines the binary wrote.
func (f *fixture) logTail(n int) string {
	tail, err := support.Tail(f.logPath, n)
	if err != nil {
		return err.Error()
	}
	return tail
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
