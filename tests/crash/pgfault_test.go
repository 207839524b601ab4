package crash

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/pgproxy"
	"github.com/threepidd/threepidd/tests/support"
)

// Bounds of the Postgres fault test.
const (
	// answerBound: no request may take longer, database or not.
	answerBound = 5 * time.Second
	// outage is how long the proxy refuses connections.
	outage = 3 * time.Second
	// recoveryBound: threepidd must serve again this long after the proxy
	// forwards again (the listener's reconnection backoff is at most 10 s).
	recoveryBound = 15 * time.Second
	// wakeBound: a notification wakes a subscriber within this.
	wakeBound = 5 * time.Second
)

// observation is one request of the load and its answer.
type observation struct {
	method, path string
	began, ended time.Time
	status       int
	errCode      string
	// page: the answer is an HTML page (a validation link's), whose
	// failures a person reads, without an errcode.
	page bool
	err  error
}

// recorder collects the observations of the load.
type recorder struct {
	mu  sync.Mutex
	obs []observation
}

func (r *recorder) observe(method, path string, began time.Time, a support.Response, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.obs = append(r.obs, observation{method: method, path: strings.SplitN(path, "?", 2)[0], began: began,
		ended: time.Now(), status: a.Status, errCode: a.ErrCode(), page: strings.HasPrefix(a.Header.Get("Content-Type"), "text/html"), err: err})
}

func (r *recorder) all() []observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]observation(nil), r.obs...)
}

// postgresBackend returns a fresh Postgres schema, skipping the test when
// THREEPIDD_TEST_POSTGRES is unset (failing under CI=true, as Backends does).
func postgresBackend(t *testing.T) storagetest.Backend {
	t.Helper()
	for _, b := range storagetest.Backends(t) {
		if b.Name == "postgres" {
			return b
		}
	}
	t.Skipf("%s is not set", storagetest.PostgresEnv)
	return storagetest.Backend{}
}

// TestPostgresFaults: threepidd serves GET /account/3pid and adds through a
// TCP proxy in front of Postgres. The proxy cuts every connection and refuses
// new ones for a few seconds: every request answers within a bound, either as
// before or with a 5xx Matrix error, never a hang, a dropped connection or a
// panic; /health answers 503. Once the proxy forwards again, threepidd
// serves again without a restart, /health answers 200, and its LISTEN
// connection is back: a notification committed by another instance while it
// was away wakes a subscriber (catch-up), and so does one committed after.
func TestPostgresFaults(t *testing.T) {
	pg := postgresBackend(t)
	u, err := url.Parse(pg.DSN)
	if err != nil {
		t.Fatalf("%s: %v", storagetest.PostgresEnv, err)
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "5432")
	}
	proxy, err := pgproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	proxied := pg
	if proxied.DSN, err = proxy.DSN(pg.DSN); err != nil {
		t.Fatal(err)
	}
	logs := support.CaptureLogs(t)
	e := harness.Start(t, proxied, harness.Options{})
	other := storagetest.Open(t, pg) // another instance, straight to the database
	admin, err := sql.Open("pgx", pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	schema := u.Query().Get("search_path")
	if schema == "" {
		t.Fatalf("storagetest DSN %q names no search_path", pg.DSN)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	woken := make(chan string, 64)
	e.Server.Store.Subscribe(ctx, func(userID string) {
		select {
		case woken <- userID:
		default:
		}
	})
	listenerPID := listenerBackend(ctx, t, admin, schema, 0)
	wake(ctx, t, other, woken, "@before:hs.test")

	// The load: each worker lists its 3PIDs and adds new ones, until the end.
	rec := &recorder{}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range workers {
		hu := e.NewUser(fmt.Sprintf("load%d", w))
		lu := user{ID: hu.ID, Password: hu.Password, Token: hu.Token}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(e.URL)
			c.observe = rec.observe
			defer c.close()
			// Requests are not cancelled: each must end on its own, within the bound.
			for n := 0; loadCtx.Err() == nil; n++ {
				_, _ = c.threepids(context.Background(), lu)
				_ = c.addEmail(context.Background(), e.SMTP, lu, fmt.Sprintf("load%d-%d@example.org", w, n), func(string) {})
			}
		}()
	}
	defer func() {
		stopLoad()
		wg.Wait()
	}()
	health := newClient(e.URL)
	defer health.close()
	waitHealth(ctx, t, health, 200, time.Second)
	time.Sleep(time.Second) // load against a healthy database

	cut := time.Now()
	proxy.Cut()
	cutDone := time.Now()
	waitHealth(ctx, t, health, 503, time.Second)
	// Committed by another instance while this one cannot listen.
	if _, err := other.AppendNotification(ctx, storage.Notification{UserID: "@during:hs.test", Medium: "email",
		Address: "during@example.org", Deleted: true, MXID: "@during:hs.test", Origin: "id.test", At: time.Now().UnixMilli()}); err != nil {
		t.Fatalf("append a notification on the other instance: %v", err)
	}
	time.Sleep(time.Until(cut.Add(outage)))
	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	healthy := waitHealth(ctx, t, health, 200, recoveryBound)
	t.Logf("healthy %v after the proxy forwarded again", healthy.Sub(restored).Round(time.Millisecond))
	select {
	case got := <-woken:
		if got != "@during:hs.test" {
			t.Fatalf("woken for %s, want @during:hs.test", got)
		}
	case <-time.After(recoveryBound):
		t.Fatal("the notification committed during the outage woke nobody after it")
	}
	listenerBackend(ctx, t, admin, schema, listenerPID)
	wake(ctx, t, other, woken, "@after:hs.test")
	time.Sleep(time.Second) // load against the recovered database
	stopLoad()
	wg.Wait()

	checkObservations(t, rec.all(), cut, cutDone, restored, healthy)
	for _, bad := range []string{`msg="handler panic"`, "panic:"} {
		if strings.Contains(logs.String(), bad) {
			t.Errorf("threepidd logged %q:\n%s", bad, logs.String())
		}
	}
	// And it still works end to end.
	final := e.NewUser("final")
	e.AddEmail(t, final, "final@example.org")
	if got := e.Threepids(t, final); len(got) != 1 || got[0]["address"] != "final@example.org" {
		t.Fatalf("after recovery: %v", got)
	}
}

// checkObservations: every request answered within answerBound; before the
// cut and once healthy again, as expected (200, or the 401 of the UIA step);
// between, as expected or with a 5xx Matrix error (or error page, for the
// pages of a validation link), and never a 200 for a
// request that needs the database and was made wholly during the outage (after
// the cut was done and before the proxy forwarded again).
func checkObservations(t *testing.T, obs []observation, cut, cutDone, restored, healthy time.Time) {
	t.Helper()
	var before, during, after, failedDuring int
	for _, o := range obs {
		what := fmt.Sprintf("%s %s at %+v of the cut", o.method, o.path, o.began.Sub(cut).Round(time.Millisecond))
		if took := o.ended.Sub(o.began); took > answerBound {
			t.Errorf("%s took %v", what, took)
		}
		if o.err != nil {
			t.Errorf("%s: %v", what, o.err)
			continue
		}
		expected := o.status == 200 || (o.status == 401 && o.path == addPath)
		matrix5xx := o.status >= 500 && (o.errCode != "" || o.page)
		switch {
		case o.ended.Before(cut):
			before++
			if !expected {
				t.Errorf("%s answered %d %s before the outage", what, o.status, o.errCode)
			}
		case o.began.After(healthy):
			after++
			if !expected {
				t.Errorf("%s answered %d %s after recovery", what, o.status, o.errCode)
			}
		default:
			during++
			if matrix5xx {
				failedDuring++
			} else if !expected {
				t.Errorf("%s answered %d %q during the outage, want a 5xx Matrix error", what, o.status, o.errCode)
			}
			if o.status == 200 && o.path == threepidPath && o.began.After(cutDone) && o.ended.Before(restored) {
				t.Errorf("%s answered 200 while the database was away", what)
			}
		}
	}
	t.Logf("cut in %v; %d requests before the outage, %d during it (%d failed with a 5xx Matrix error), %d after recovery",
		cutDone.Sub(cut).Round(time.Microsecond), before, during, failedDuring, after)
	if before == 0 || failedDuring == 0 || after == 0 {
		t.Errorf("the load missed a phase: %d before, %d failed during, %d after", before, failedDuring, after)
	}
}

// waitHealth polls GET /health until it answers status, within bound; it
// returns when it did.
func waitHealth(ctx context.Context, t *testing.T, c *client, status int, bound time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		began := time.Now()
		a, err := c.do(ctx, "GET", "/health", "", nil)
		if took := time.Since(began); took > answerBound {
			t.Errorf("/health took %v", took)
		}
		if err == nil && a.Status == status {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("/health answered %s (%v), want %d within %v", a, err, status, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listenerBackend waits until the threepidd listener of schema has a
// LISTENing database connection whose server process is not notPID, and
// returns that process ID.
func listenerBackend(ctx context.Context, t *testing.T, admin *sql.DB, schema string, notPID int) int {
	t.Helper()
	deadline := time.Now().Add(recoveryBound)
	for {
		var pid int
		err := admin.QueryRowContext(ctx, `SELECT pid FROM pg_stat_activity
			WHERE application_name = $1 AND query LIKE 'LISTEN %' AND pid <> $2 LIMIT 1`,
			"threepidd listener "+schema, notPID).Scan(&pid)
		if err == nil {
			return pid
		}
		if err != sql.ErrNoRows {
			t.Fatalf("pg_stat_activity: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no LISTEN connection of the threepidd listener (other than %d) within %v", notPID, recoveryBound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wake appends a notification for userID through other (another instance)
// and requires the subscription to be woken for it within wakeBound.
func wake(ctx context.Context, t *testing.T, other storage.Store, woken <-chan string, userID string) {
	t.Helper()
	if _, err := other.AppendNotification(ctx, storage.Notification{UserID: userID, Medium: "email",
		Address: "wake@example.org", Deleted: true, MXID: userID, Origin: "id.test", At: time.Now().UnixMilli()}); err != nil {
		t.Fatalf("append a notification on the other instance: %v", err)
	}
	select {
	case got := <-woken:
		if got != userID {
			t.Fatalf("woken for %s, want %s", got, userID)
		}
	case <-time.After(wakeBound):
		t.Fatalf("a notification for %s woke nobody within %v", userID, wakeBound)
	}
}
