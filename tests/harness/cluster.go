package harness

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage/backend"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/support"
)

// Cluster is several threepidd instances on one Postgres store, sharing one
// set of fakes and one configuration (signing key, identity servers, limits),
// behind nginx with the shipped deploy/nginx/threepidd.conf balancing them
// round-robin, as a deployment of several instances runs.
type Cluster struct {
	// Instances are the threepidd instances, each restartable on its own
	// (Restart, Stop); Instances[0] holds the fakes, shared by all.
	Instances []*Env
	// URL is nginx's base URL: what clients use. public_baseurl is this
	// URL, so validation links go through nginx too.
	URL string
	// Nginx is the nginx in front (its Dir holds error.log and access.log).
	Nginx *support.Nginx
}

// StartCluster starts n instances on backend b (Postgres only: a SQLite file
// belongs to one process, so the test is skipped on SQLite) and nginx in
// front of them; see support.RequireNginx for when nginx is missing.
func StartCluster(t testing.TB, b storagetest.Backend, n int, opts Options) *Cluster {
	t.Helper()
	if b.Driver != backend.Postgres {
		t.Skipf("skipped on %s: instances share a store only on Postgres (a SQLite file is one process's)", b.Name)
	}
	nginx := support.RequireNginx(t)
	port, err := support.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	opts.ExtraYAML = fmt.Sprintf("public_baseurl: \"http://%s\"\n", listen) + opts.ExtraYAML
	first := Start(t, b, opts)
	c := &Cluster{Instances: []*Env{first}, URL: "http://" + listen}
	for i := 1; i < n; i++ {
		e := &Env{t: t, Backend: b, HS: first.HS, SMTP: first.SMTP, SMS: first.SMS, IS: first.IS, Key: first.Key, configPath: first.configPath}
		e.start()
		t.Cleanup(e.Stop)
		c.Instances = append(c.Instances, e)
	}
	addrs := make([]string, n)
	for i, e := range c.Instances {
		addrs[i] = e.Config.Listen
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if c.Nginx, err = support.StartNginx(ctx, t, support.NginxOptions{Binary: nginx, Threepidd: addrs,
		Homeserver: strings.TrimPrefix(first.HS.URL(), "http://"), Listen: listen}); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	registerThreepidd(listen)
	t.Cleanup(func() { unregisterThreepidd(listen) })
	return c
}

// Do sends a request through nginx (see Env.Do).
func (c *Cluster) Do(t testing.TB, method, path, token string, body any) Response {
	t.Helper()
	return Do(t, method, c.URL+path, token, body)
}
