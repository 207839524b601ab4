package load

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/threepidd/threepidd/server"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/perf/seed"
)

const (
	// mailWait bounds the wait for a validation e-mail once requestToken answered.
	mailWait = 10 * time.Second
	// noRateLimits turns every limit off: the run measures throughput, not limits.
	noRateLimits = "{requesttoken_per_ip: {per_second: 0}, requesttoken_per_address: {per_second: 0}, onupdate_per_server: {per_second: 0}, unbind_per_user: {per_second: 0}}"
	// tokenCacheTTL is the production default of homeserver.token_cache_ttl.
	tokenCacheTTL = 10 * time.Second
	// rebindBatch is how many bindings one transaction restores after onupdate rounds.
	rebindBatch = 2000
)

// loadUser is a seeded user with a logged-in device.
type loadUser struct {
	ID, Token string
}

// rig is threepidd (with its fakes) and the baseline on one fresh store,
// seeded, with a load client.
type rig struct {
	t     testing.TB
	hs    *fakes.Homeserver
	store storage.Store
	// url and baseline are the base URLs of threepidd and of the baseline.
	url, baseline string
	sink          *MailSink
	client        *Client
	// pop is the seeded population, which the fake homeserver serves.
	pop fakes.Population
	// active is how many users the operations draw from, spread evenly
	// over the population: user k of them is seeded user k*stride.
	active, stride int
	// onupdateIS sends onupdates about the seeded bindings; bindIS serves
	// bind/unbind.
	onupdateIS, bindIS *fakes.IdentityServer
}

// newRig starts everything on backend b and seeds users users with 1 to 3
// addresses each, the first bound on onupdateIS; the operations draw from
// active of them (all if fewer).
func newRig(t testing.TB, b storagetest.Backend, users, active, clients int) *rig {
	t.Helper()
	ctx := context.Background()
	sink, err := NewMailSink()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	env := harness.Start(t, b, harness.Options{IdentityServers: 2, NoMSISDN: true, RateLimitYAML: noRateLimits})
	r := &rig{t: t, hs: env.HS, sink: sink, client: NewClient(clients), onupdateIS: env.IS[0], bindIS: env.IS[1],
		pop: fakes.Population{Users: users}, active: min(active, users)}
	r.stride = users / r.active
	env.HS.SetPopulation(r.pop)

	// The harness pins token_cache_ttl to 2 s for its tests and mails to the
	// e2e sink: restart threepidd on the same store and fakes with the
	// production TTL and the load sink.
	env.Stop()
	cfg := *env.Config
	cfg.Listen, cfg.PublicBaseURL = "127.0.0.1:0", ""
	cfg.Homeserver.TokenCacheTTL = tokenCacheTTL
	cfg.Homeserver.ReconcileInterval = 0 // no background pass over the population mid-run
	cfg.Email.SMTPHost, cfg.Email.SMTPPort = "127.0.0.1", sink.Port()
	srv, err := server.New(ctx, &cfg)
	if err != nil {
		t.Fatalf("start threepidd: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("shut threepidd down: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	r.store, r.url = srv.Store, "http://"+srv.Addr()

	base, err := StartBaseline(srv.Store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = base.Close() })
	r.baseline = base.URL()
	t.Cleanup(r.client.CloseIdle)

	start := time.Now()
	st, err := seed.Seed(ctx, r.store, seed.Options{Population: r.pop, ServerName: harness.ServerName,
		IDServer: r.onupdateIS.Name(), At: time.Now().UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: seeded %d users, %d 3PIDs and %d bindings (on %s) in %v",
		b.Name, st.Users, st.Threepids, st.Bindings, r.onupdateIS.Name(), time.Since(start).Round(time.Millisecond))
	r.checkList(ctx)
	return r
}

// activeIndex is the population index of active user k.
func (r *rig) activeIndex(k int) int { return k * r.stride }

// user is seeded user i.
func (r *rig) user(i int) loadUser {
	return loadUser{ID: seed.UserID(r.pop, harness.ServerName, i), Token: r.pop.Token(i)}
}

// bindSeeded restores the bindings on onupdateIS of the active users
// numbered [from, end) modulo their count (each user's first address), a
// transaction per rebindBatch.
func (r *rig) bindSeeded(ctx context.Context, from, end int64) {
	r.t.Helper()
	total := int64(r.active)
	end = min(end, from+total)
	now := time.Now().UnixMilli()
	for batch := from; batch < end; batch += rebindBatch {
		var bs []storage.Binding
		for n := batch; n < min(batch+rebindBatch, end); n++ {
			bs = append(bs, seed.Binding(r.pop, harness.ServerName, r.onupdateIS.Name(), r.activeIndex(int(n%total)), now))
		}
		if err := r.store.UpsertBindings(ctx, bs); err != nil {
			r.t.Fatalf("restore bindings: %v", err)
		}
	}
}

// checkList makes sure both sides list the first user's seeded 3PIDs.
func (r *rig) checkList(ctx context.Context) {
	r.t.Helper()
	u := r.user(0)
	calls := map[string]Call{
		"threepidd": {Method: http.MethodGet, URL: r.url + "/_matrix/client/v3/account/3pid", Authorization: "Bearer " + u.Token, Want: http.StatusOK},
		"baseline":  {Method: http.MethodGet, URL: r.baseline + BaselineList, Header: UserHeader, HeaderValue: u.ID, Want: http.StatusOK},
	}
	for side, c := range calls {
		body, err := r.client.Do(ctx, c)
		if err != nil {
			r.t.Fatalf("%s: %v", side, err)
		}
		var list struct {
			Threepids []struct{ Address string } `json:"threepids"`
		}
		if err := json.Unmarshal(body, &list); err != nil || len(list.Threepids) != r.pop.ThreepidCount(0) || list.Threepids[0].Address != r.pop.Address(0, 0) {
			r.t.Fatalf("%s lists %s for the first user, want its %d seeded 3PIDs (%v)", side, body, r.pop.ThreepidCount(0), err)
		}
	}
}
