//go:build realpeer

package realpeer

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Env is where setup.sh put the real peers.
type Env struct {
	// DendriteBinDir holds dendrite, create-account, generate-config and generate-keys.
	DendriteBinDir string
	// Nginx is the nginx binary.
	Nginx string
	// Node is the node binary.
	Node string
	// JSDir is the Node client directory (journey.mjs, installed node_modules).
	JSDir string
	// RepoRoot is the root of the threepidd source tree.
	RepoRoot string
}

var setupOnce = sync.OnceValues(func() (Env, error) {
	return runSetup(context.Background())
})

// Setup runs setup.sh once per process (later calls return the first result):
// it installs nginx if missing, builds or finds the cached Dendrite binaries
// and installs the Node client's packages.
func Setup() (Env, error) {
	return setupOnce()
}

// sourceDir is the directory of this package's source, which holds setup.sh
// whatever the working directory of the test binary that imports it.
func sourceDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("locate package source: runtime.Caller failed")
	}
	return filepath.Dir(file), nil
}

func runSetup(ctx context.Context) (Env, error) {
	dir, err := sourceDir()
	if err != nil {
		return Env{}, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(dir, "setup.sh"))
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return Env{}, fmt.Errorf("run setup.sh: %w\n%s", err, stderr.String())
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vars[k] = v
		}
	}
	env := Env{
		DendriteBinDir: vars["DENDRITE_BIN_DIR"],
		Nginx:          vars["NGINX"],
		Node:           vars["NODE"],
		JSDir:          vars["JS_DIR"],
		RepoRoot:       filepath.Join(dir, "..", ".."),
	}
	for name, v := range map[string]string{"DENDRITE_BIN_DIR": env.DendriteBinDir, "NGINX": env.Nginx, "NODE": env.Node, "JS_DIR": env.JSDir} {
		if v == "" {
			return Env{}, fmt.Errorf("setup.sh printed no %s; its output:\n%s", name, stdout.String())
		}
	}
	return env, nil
}

// ContextOf is a context that ends with the test (or a little before its deadline).
func ContextOf(t *testing.T) context.Context {
	ctx := t.Context()
	if deadline, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-5*time.Second))
		t.Cleanup(cancel)
	}
	return ctx
}
