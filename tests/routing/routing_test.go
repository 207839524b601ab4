package routing

import (
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/threepidd/threepidd/tests/support"
)

// location is one nginx location block: its modifier ("=", "^~", "~" or ""
// for a plain prefix), its pattern and its proxy_pass upstream.
type location struct {
	modifier, pattern, upstream string
}

var (
	locationLine = regexp.MustCompile(`(?m)^location\s+(=|\^~|~)?\s*(\S+)\s*\{`)
	proxyPass    = regexp.MustCompile(`proxy_pass\s+http://([a-z]+)`)
)

// parseLocations reads the location blocks of an nginx file (one level deep,
// as threepidd.conf has them), in order.
func parseLocations(t *testing.T, conf string) []location {
	t.Helper()
	var out []location
	idx := locationLine.FindAllStringSubmatchIndex(conf, -1)
	for i, m := range idx {
		end := len(conf)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		block := conf[m[1]:end]
		pass := proxyPass.FindStringSubmatch(block)
		if pass == nil {
			t.Fatalf("location %s has no proxy_pass", conf[m[4]:m[5]])
		}
		l := location{pattern: conf[m[4]:m[5]], upstream: pass[1]}
		if m[2] >= 0 {
			l.modifier = conf[m[2]:m[3]]
		}
		out = append(out, l)
	}
	return out
}

// route picks the location nginx uses for a request path, as nginx does:
// an exact match; else the longest prefix if it is ^~; else the first
// matching regex in file order; else the longest prefix. nginx matches the
// decoded path (its $uri); the regexes here mean the same to PCRE and Go.
func route(t *testing.T, locs []location, rawPath string) string {
	t.Helper()
	path, err := url.PathUnescape(rawPath)
	if err != nil {
		t.Fatalf("unescape %s: %v", rawPath, err)
	}
	var longest *location
	for i, l := range locs {
		switch l.modifier {
		case "=":
			if path == l.pattern {
				return l.upstream
			}
		case "^~", "":
			if strings.HasPrefix(path, l.pattern) && (longest == nil || len(l.pattern) > len(longest.pattern)) {
				longest = &locs[i]
			}
		}
	}
	if longest != nil && longest.modifier == "^~" {
		return longest.upstream
	}
	for _, l := range locs {
		if l.modifier == "~" && regexp.MustCompile(l.pattern).MatchString(path) {
			return l.upstream
		}
	}
	if longest == nil {
		t.Fatalf("no location for %s", path)
	}
	return longest.upstream
}

func readFile(t *testing.T, rel string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(support.RepoRoot(), rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// routeCases are every path of every route list, with where it must go, and
// the near misses that must stay with the homeserver.
func routeCases(t *testing.T) map[string]string {
	t.Helper()
	reqs, err := support.RouteRequests()
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{}
	for _, r := range reqs {
		if prev, ok := cases[r.Path]; ok && prev != r.Route.To {
			t.Fatalf("%s: the route lists disagree", r.Path)
		}
		cases[r.Path] = r.Route.To
	}
	for _, p := range []string{
		"/_matrix/client/v3/account/3pidx", "/_matrix/client/unstable/account/3pidx", "/_matrix/client/v3/sync/extra",
		"/_matrix/client/unstable/capabilities/extra", "/_matrix/client/api/v1/sync", "/_matrix/client/api/v1/account/3pid",
		"/_matrix/client/v3/rooms/%21room%3Ahs.test/messages/extra", "/_matrix/client/v1/rooms/%21room%3Ahs.test/messages",
		"/_matrix/federation/v1/3pid/onupdate/extra", "/_matrix/client/unstable/add_threepidx",
	} {
		cases[p] = support.ToHomeserver
	}
	cases["/_matrix/client/unstable/add_threepid/email/submit_token"] = support.ToThreepidd
	cases["/_threepidd/admin/v1/users/%40a%3Ahs.test/threepids"] = support.ToThreepidd
	return cases
}

// TestNginxFile: deploy/nginx/threepidd.conf sends every threepidd route of
// the route lists to threepidd, under every prefix, and nothing else.
func TestNginxFile(t *testing.T) {
	locs := parseLocations(t, readFile(t, "deploy/nginx/threepidd.conf"))
	for path, want := range routeCases(t) {
		if got := route(t, locs, path); got != want {
			t.Errorf("nginx sends %s to %s, want %s", path, got, want)
		}
	}
}

// TestREADMEQuotesTheNginxFile: the README's nginx locations are the file's,
// in its order.
func TestREADMEQuotesTheNginxFile(t *testing.T) {
	file := parseLocations(t, readFile(t, "deploy/nginx/threepidd.conf"))
	readme := readFile(t, "README.md")
	start := strings.Index(readme, "Its locations, in order")
	if start < 0 {
		t.Fatal("README has no quoted locations")
	}
	block := readme[start:]
	block = block[strings.Index(block, "```nginx")+len("```nginx"):]
	block = block[:strings.Index(block, "```")]
	quoted := parseLocations(t, block)
	if !slices.Equal(quoted, file) {
		t.Fatalf("README quotes\n%v\nthe file has\n%v", quoted, file)
	}
}

// caddyMatcher is a named matcher of the README's Caddy block.
type caddyMatcher struct {
	re    *regexp.Regexp // path_regexp
	paths []string       // path: exact, or a prefix when ending in *
}

func (m caddyMatcher) match(path string) bool {
	if m.re != nil {
		return m.re.MatchString(path)
	}
	for _, p := range m.paths {
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(path, prefix) || p == path {
			return true
		}
	}
	return false
}

// TestCaddyBlock: the README's Caddy block (Caddy's path_regexp is Go's
// regexp, on the decoded path) sends exactly the threepidd routes to
// threepidd.
func TestCaddyBlock(t *testing.T) {
	readme := readFile(t, "README.md")
	start := strings.Index(readme, "```caddyfile")
	if start < 0 {
		t.Fatal("README has no Caddy block")
	}
	block := readme[start+len("```caddyfile"):]
	block = block[:strings.Index(block, "```")]
	matchers := map[string]caddyMatcher{}
	var toThreepidd []string // matchers whose handle proxies to threepidd's port
	var current string
	for _, line := range strings.Split(block, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && strings.HasPrefix(f[0], "@") && f[1] == "path_regexp":
			matchers[f[0]] = caddyMatcher{re: regexp.MustCompile(f[2])}
		case len(f) >= 3 && strings.HasPrefix(f[0], "@") && f[1] == "path":
			matchers[f[0]] = caddyMatcher{paths: f[2:]}
		case len(f) >= 2 && f[0] == "handle":
			current = f[1]
		case len(f) >= 2 && f[0] == "reverse_proxy" && f[1] == "127.0.0.1:8090" && current != "":
			toThreepidd = append(toThreepidd, current)
		}
	}
	if len(toThreepidd) == 0 {
		t.Fatal("no Caddy handle proxies to threepidd")
	}
	for path, want := range routeCases(t) {
		decoded, err := url.PathUnescape(path)
		if err != nil {
			t.Fatal(err)
		}
		got := support.ToHomeserver
		for _, name := range toThreepidd {
			if matchers[name].match(decoded) {
				got = support.ToThreepidd
			}
		}
		if got != want {
			t.Errorf("Caddy sends %s to %s, want %s", path, got, want)
		}
	}
}
