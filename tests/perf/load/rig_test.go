package load

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/threepidd/threepidd/server"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/threepid"
)

const (
	// threepidsPerUser is how many e-mail addresses each seeded user holds.
	threepidsPerUser = 3
	// seedBatch is how many 3PIDs one seeding transaction writes.
	seedBatch = 1500
	// userPassword is every seeded user's password (for the UIA relay).
	userPassword = "load-password"
	// mailWait bounds the wait for a validation e-mail once requestToken answered.
	mailWait = 10 * time.Second
	// noRateLimits turns every limit off: the run measures throughput, not limits.
	noRateLimits = "{requesttoken_per_ip: {per_second: 0}, requesttoken_per_address: {per_second: 0}, onupdate_per_server: {per_second: 0}, unbind_per_user: {per_second: 0}}"
	// tokenCacheTTL is the production default of homeserver.token_cache_ttl.
	tokenCacheTTL = 10 * time.Second
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
	users         []loadUser
	// onupdateIS sends onupdates about the seeded bindings; bindIS serves
	// bind/unbind.
	onupdateIS, bindIS *fakes.IdentityServer
}

// newRig starts everything on backend b and seeds users users with
// threepidsPerUser addresses each, all bound on onupdateIS.
func newRig(t testing.TB, b storagetest.Backend, users, clients int) *rig {
	t.Helper()
	ctx := context.Background()
	sink, err := NewMailSink()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	env := harness.Start(t, b, harness.Options{IdentityServers: 2, NoMSISDN: true, RateLimitYAML: noRateLimits})
	r := &rig{t: t, hs: env.HS, sink: sink, client: NewClient(clients), onupdateIS: env.IS[0], bindIS: env.IS[1]}

	// The harness pins token_cache_ttl to 2 s for its tests and mails to the
	// e2e sink: restart threepidd on the same store and fakes with the
	// production TTL and the load sink.
	env.Stop()
	cfg := *env.Config
	cfg.Listen, cfg.PublicBaseURL = "127.0.0.1:0", ""
	cfg.Homeserver.TokenCacheTTL = tokenCacheTTL
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
	r.seed(ctx, users)
	t.Logf("%s: seeded %d users with %d 3PIDs each (and their bindings on %s) in %v",
		b.Name, users, threepidsPerUser, r.onupdateIS.Name(), time.Since(start).Round(time.Millisecond))
	r.checkList(ctx)
	return r
}

// seedAddress is the k-th address of the i-th seeded user.
func seedAddress(i, k int) string { return fmt.Sprintf("user%d.%d@load.test", i, k) }

// seed registers users on the fake homeserver and writes their 3PIDs and
// bindings straight into the store, a transaction per seedBatch 3PIDs, and
// marks them seen, as `threepidd import` leaves a deployment (else each
// user's first request would import from the homeserver: a one-time cost).
func (r *rig) seed(ctx context.Context, users int) {
	r.t.Helper()
	r.users = make([]loadUser, users)
	for i := range r.users {
		id := r.hs.AddUser(fmt.Sprintf("load%d", i), userPassword)
		token, _ := r.hs.Login(id)
		r.users[i] = loadUser{ID: id, Token: token}
	}
	total := users * threepidsPerUser
	now := time.Now().UnixMilli()
	for from := 0; from < total; from += seedBatch {
		err := r.store.WithTx(ctx, func(q storage.Querier) error {
			for idx := from; idx < min(from+seedBatch, total); idx++ {
				i, k := idx/threepidsPerUser, idx%threepidsPerUser
				a := storage.Association{UserID: r.users[i].ID, Medium: threepid.MediumEmail, Address: seedAddress(i, k), ValidatedAt: now, AddedAt: now}
				if err := q.InsertAssociation(ctx, a); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			r.t.Fatalf("seed 3PIDs: %v", err)
		}
	}
	ids := make([]string, len(r.users))
	for i, u := range r.users {
		ids[i] = u.ID
	}
	if err := r.store.MarkUsersSeen(ctx, ids, now); err != nil {
		r.t.Fatalf("mark seeded users seen: %v", err)
	}
	r.bindSeeded(ctx, 0, int64(total))
}

// bindSeeded records the bindings on onupdateIS of the seeded 3PIDs numbered
// [from, end) modulo their count, a transaction per seedBatch.
func (r *rig) bindSeeded(ctx context.Context, from, end int64) {
	r.t.Helper()
	total := int64(len(r.users) * threepidsPerUser)
	end = min(end, from+total)
	now := time.Now().UnixMilli()
	for batch := from; batch < end; batch += seedBatch {
		err := r.store.WithTx(ctx, func(q storage.Querier) error {
			for n := batch; n < min(batch+seedBatch, end); n++ {
				idx := int(n % total)
				i, k := idx/threepidsPerUser, idx%threepidsPerUser
				b := storage.Binding{UserID: r.users[i].ID, Medium: threepid.MediumEmail, Address: seedAddress(i, k), IDServer: r.onupdateIS.Name(), BoundAt: now}
				if err := q.UpsertBinding(ctx, b); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			r.t.Fatalf("record bindings: %v", err)
		}
	}
}

// checkList makes sure both sides list the first user's seeded 3PIDs.
func (r *rig) checkList(ctx context.Context) {
	r.t.Helper()
	u := r.users[0]
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
		if err := json.Unmarshal(body, &list); err != nil || len(list.Threepids) != threepidsPerUser || list.Threepids[0].Address != seedAddress(0, 0) {
			r.t.Fatalf("%s lists %s for the first user, want its %d seeded 3PIDs (%v)", side, body, threepidsPerUser, err)
		}
	}
}
