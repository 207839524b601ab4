// Package layout holds the test that keeps threepidd's package layout: every
// package of ours sits on a layer and imports only from layers below it, the
// sync library stays embeddable without our HTTP layer, handler packages are
// wired only by server and cmd, and storage knows nothing of HTTP.
package layout

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/threepidd/threepidd"

// layers places each production package of ours (the path below the module).
// A package imports only packages of lower layers. A new package must be
// placed here: the test names it when it is missing.
var layers = map[string]int{
	// 0: leaves: errors, metrics, domain forms, the clock, request IDs, the
	// storage interface, key files.
	"mxerr": 0, "metrics": 0, "threepid": 0, "internal/clock": 0, "internal/requestid": 0,
	"storage": 0, "federation/signingkey": 0, "internal/mailsink": 0,
	// 1: configuration, shared SQL, request plumbing, outbound clients, fakes
	// of peers for the demo, job leases.
	"config": 1, "internal/lease": 1, "storage/sqlstore": 1, "router": 1, "internal/sydent": 1, "outbound": 1,
	// 2: backends, and the clients and libraries built on the config: the
	// homeserver client, outbox, policy, delivery, rate limits, the sync library.
	"storage/sqlite": 2, "storage/postgres": 2, "homeserver": 2, "httpapi": 2, "outbox": 2, "policy": 2,
	"delivery": 2, "ratelimit": 2, "sync": 2,
	// 3: what builds on those: federation (X-Matrix, keys), after-change sinks,
	// access-token auth, the importer, opening a backend.
	"federation": 3, "events": 3, "auth": 3, "importer": 3, "storage/backend": 3,
	"storage/storagetest": 4, "federation/identity": 4, "events/eventstest": 4, "metrics/metricstest": 1,
	// 5-6: the services; reconcile keeps the store and the homeserver in
	// step (over the mirror, the importer and a deactivation cleanup).
	"bindings": 5, "account": 6, "onupdate": 6, "reconcile": 5,
	// 7: HTTP handlers, each over one or two services.
	"clientapi": 7, "adminapi": 7, "federationapi": 7, "sync/proxy": 7,
	// 8-9: wiring and the binary.
	"server": 8, "demo": 9, "cmd/threepidd": 10,
}

// handlers are the packages that register routes: only server and the
// binary wire them.
var handlers = []string{"clientapi", "adminapi", "federationapi", "sync/proxy"}

// httpLayer is what the sync library must never depend on: our HTTP layer,
// the upstream client, and gorilla/mux.
var httpLayer = []string{
	module + "/httpapi", module + "/router", module + "/auth", module + "/homeserver",
	module + "/clientapi", module + "/adminapi", module + "/federationapi", module + "/sync/proxy",
	module + "/server", "github.com/gorilla/mux",
}

// pkg is what go list says of a package.
type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
	Deps         []string
}

// list runs go list on the module and returns its packages.
func list(t *testing.T, args ...string) []pkg {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), append([]string{"list", "-json"}, args...)...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// ours returns the module-relative path of path, or false.
func ours(path string) (string, bool) {
	rel, ok := strings.CutPrefix(path, module+"/")
	return rel, ok
}

func TestLayers(t *testing.T) {
	for _, p := range list(t, "./...") {
		rel, _ := ours(p.ImportPath)
		if strings.HasPrefix(rel, "tests/") {
			continue // test support sits above everything
		}
		layer, placed := layers[rel]
		if !placed {
			t.Errorf("package %s has no layer: add it to layers in tests/layout", rel)
			continue
		}
		for _, imp := range p.Imports {
			dep, ok := ours(imp)
			if !ok {
				continue
			}
			if l, placed := layers[dep]; placed && l >= layer {
				t.Errorf("%s (layer %d) imports %s (layer %d): imports go to lower layers only", rel, layer, dep, l)
			}
		}
	}
}

func TestHandlersWiredOnlyByServer(t *testing.T) {
	for _, p := range list(t, "./...") {
		rel, _ := ours(p.ImportPath)
		if rel == "server" || strings.HasPrefix(rel, "cmd/") {
			continue
		}
		check := func(kind string, imports []string, self string) {
			for _, imp := range imports {
				dep, _ := ours(imp)
				if slices.Contains(handlers, dep) && dep != self {
					t.Errorf("%s imports handler package %s (%s): only server and cmd wire handlers", rel, dep, kind)
				}
			}
		}
		check("imports", p.Imports, "")
		check("test imports", p.TestImports, "")
		// A handler package's external tests may import the package itself.
		check("external test imports", p.XTestImports, rel)
	}
}

func TestSyncLibraryEmbeddable(t *testing.T) {
	pkgs := list(t, "./sync")
	if len(pkgs) != 1 {
		t.Fatalf("go list ./sync: %d packages", len(pkgs))
	}
	for _, dep := range pkgs[0].Deps {
		if slices.Contains(httpLayer, dep) {
			t.Errorf("the sync library depends on %s: a Go homeserver must embed it without our HTTP layer", dep)
		}
	}
}

func TestStorageWithoutHTTP(t *testing.T) {
	for _, p := range list(t, "./storage/...") {
		rel, _ := ours(p.ImportPath)
		for _, imp := range p.Imports {
			dep, isOurs := ours(imp)
			if imp == "net/http" || (isOurs && slices.Contains(httpLayer, module+"/"+dep)) {
				t.Errorf("%s imports %s: storage knows nothing of HTTP", rel, imp)
			}
		}
	}
}
