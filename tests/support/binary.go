package support

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
)

// built is the threepidd binary of this test process, built once.
var built struct {
	once      sync.Once
	dir, path string
	err       error
}

// RunTests runs m's tests and removes the binary ThreepiddBinary built, if
// any; a package whose tests run the binary calls it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(support.RunTests(m)) }
func RunTests(m *testing.M) int {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	return code
}

// ThreepiddBinary builds cmd/threepidd once per test process (with -race
// when the tests run with -race) and returns its path.
func ThreepiddBinary(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		began := time.Now()
		if built.dir, built.err = os.MkdirTemp("", "threepidd-test-"); built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "threepidd")
		args := []string{"build", "-o", built.path}
		if RaceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/threepidd/threepidd/cmd/threepidd")
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		}
		if out, err := exec.Command(goTool, args...).CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		t.Logf("built threepidd (race %v) in %v", RaceEnabled, time.Since(began).Round(time.Millisecond))
	})
	if built.err != nil {
		t.Fatalf("build threepidd: %v", built.err)
	}
	return built.path
}

// ThreepiddCommand is the threepidd binary (ThreepiddBinary) run with args,
// killed when ctx ends, in this process's environment less the THREEPIDD_
// overrides: a stray one would change the configuration under test.
func ThreepiddCommand(ctx context.Context, t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, ThreepiddBinary(t), args...)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, config.EnvPrefix) && !strings.HasPrefix(kv, config.EnvTestPrefix) {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	return cmd
}

// listeningRE matches the line threepidd logs once it listens (in the text
// log format, the default).
var listeningRE = regexp.MustCompile(`msg="threepidd listening" addr=(\S+) metrics=(\S*)`)

// StartThreepidd runs the threepidd binary with the configuration file at
// configPath in a child process (its output in a file of t's temporary
// directory), waits until it listens, and returns it with its API and
// metrics base URLs (metrics "" when the configuration sets no
// metrics_listen). It is stopped with SIGTERM when t ends.
func StartThreepidd(t testing.TB, configPath string) (p *Process, apiURL, metricsURL string) {
	t.Helper()
	p, err := StartProcess("threepidd", ThreepiddCommand(context.Background(), t, "-config", configPath),
		filepath.Join(t.TempDir(), "threepidd.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(20 * time.Second); err != nil {
			t.Errorf("%v\n%s", err, p.LogTail(20))
		}
	})
	m, err := p.WaitLine(listeningRE, 60*time.Second)
	if err != nil {
		t.Fatalf("threepidd did not start: %v\n%s", err, p.LogTail(20))
	}
	if m[2] != "" {
		metricsURL = "http://" + m[2]
	}
	return p, "http://" + m[1], metricsURL
}
