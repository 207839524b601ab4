package support

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Where a route of a homeserver kind belongs (Route.To).
const (
	ToThreepidd  = "threepidd"
	ToHomeserver = "homeserver"
)

// RouteList is a homeserver kind's route facts, from testdata/routes.
type RouteList struct {
	Homeserver string  `json:"homeserver"`
	Version    string  `json:"version"`
	Routes     []Route `json:"routes"`
}

// Route is one endpoint of a homeserver kind.
type Route struct {
	Method string `json:"method"`
	// Path is relative to /_matrix/client/<prefix>, or absolute when
	// Prefixes is empty; {roomId} stands for a room ID.
	Path     string   `json:"path"`
	Prefixes []string `json:"prefixes"`
	// To is ToThreepidd or ToHomeserver.
	To   string `json:"to"`
	From string `json:"from"`
}

// ExampleRoomID replaces {roomId} in the paths of [Route.URLs], percent-encoded.
const ExampleRoomID = "%21room%3Ahs.test"

// examples fill the path variables of routes in [Route.URLs].
var examples = strings.NewReplacer("{roomId}", ExampleRoomID, "{eventId}", "%24event",
	"{relType}", "m.thread", "{eventType}", "m.room.message")

// URLs returns the request paths of r: one per prefix, its variables filled in.
func (r Route) URLs() []string {
	path := examples.Replace(r.Path)
	if len(r.Prefixes) == 0 {
		return []string{path}
	}
	out := make([]string, 0, len(r.Prefixes))
	for _, p := range r.Prefixes {
		out = append(out, "/_matrix/client/"+p+path)
	}
	return out
}

// RouteRequest is one request of a route: its method, its path under one
// prefix, and the route it comes from.
type RouteRequest struct {
	Method, Path string
	Route        Route
	// List is the route list it is from.
	List *RouteList
}

// RouteRequests returns every request of every route of every kind's list.
func RouteRequests() ([]RouteRequest, error) {
	var out []RouteRequest
	for _, kind := range RouteKinds {
		list, err := LoadRoutes(kind)
		if err != nil {
			return nil, err
		}
		for _, r := range list.Routes {
			for _, p := range r.URLs() {
				out = append(out, RouteRequest{Method: r.Method, Path: p, Route: r, List: &list})
			}
		}
	}
	return out, nil
}

// RouteKinds are the homeserver kinds testdata/routes describes.
var RouteKinds = []string{"synapse", "dendrite"}

// LoadRoutes reads testdata/routes/<kind>.json.
func LoadRoutes(kind string) (RouteList, error) {
	var l RouteList
	data, err := os.ReadFile(filepath.Join(RepoRoot(), "testdata", "routes", kind+".json"))
	if err != nil {
		return l, fmt.Errorf("route list: %w", err)
	}
	if err := json.Unmarshal(data, &l); err != nil {
		return l, fmt.Errorf("route list %s: %w", kind, err)
	}
	for _, r := range l.Routes {
		if r.To != ToThreepidd && r.To != ToHomeserver {
			return l, fmt.Errorf("route list %s: %s %s goes to %q", kind, r.Method, r.Path, r.To)
		}
	}
	return l, nil
}

// RepoRoot is the root of threepidd's source tree.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}
