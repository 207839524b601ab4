package federationapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/events/eventstest"
	"github.com/threepidd/threepidd/metrics/metricstest"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/backend"
	"github.com/threepidd/threepidd/storage/storagetest"
)

// TestApply runs each update from id.test against bindings of its 3PID on
// id.test (and, where said, on id2.test) and checks who lost what.
func TestApply(t *testing.T) {
	const (
		alice, bob, carol = "@alice:" + hsName, "@bob:" + hsName, "@carol:" + hsName
		remote            = "@bob:other.tld"
	)
	tests := []struct {
		name    string
		holders []string // users bound to the 3PID on id.test
		onOther []string // users bound to the 3PID on otherName
		update  onupdate.Update
		// notified lose their binding on id.test; the other holders keep it.
		notified []string
	}{
		{"deletion naming the holder", []string{alice}, nil, onupdate.Update{Deleted: true, MXID: alice}, []string{alice}},
		{"deletion naming another local user", []string{alice}, nil, onupdate.Update{Deleted: true, MXID: bob}, nil},
		{"deletion naming a remote user", []string{alice}, nil, onupdate.Update{Deleted: true, MXID: remote}, nil},
		{"deletion naming nobody", []string{alice, bob}, nil, onupdate.Update{Deleted: true}, []string{alice, bob}},
		{"takeover by a remote user", []string{alice, bob}, nil, onupdate.Update{MXID: remote}, []string{alice, bob}},
		{"takeover by one of the holders", []string{alice, bob}, nil, onupdate.Update{MXID: alice}, []string{bob}},
		{"takeover by a local user without a record", []string{alice}, nil, onupdate.Update{MXID: carol}, []string{alice}},
		{"3PID never recorded", nil, nil, onupdate.Update{MXID: remote}, nil},
		{"other identity server untouched", []string{alice}, []string{alice, bob}, onupdate.Update{Deleted: true}, []string{alice}},
	}
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		fx := newFixture(t, store, config.Bucket{})
		ctx := context.Background()
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ev := &eventstest.Recorder{}
				fx.service.Bindings.Events = ev
				u := tt.update
				u.Medium, u.Address = "email", fmt.Sprintf("apply%d@example.org", i)
				for _, h := range tt.holders {
					fx.bind(t, h, u.Medium, u.Address)
				}
				for _, h := range tt.onOther {
					if err := fx.store.UpsertBinding(ctx, storage.Binding{UserID: h, Medium: u.Medium, Address: u.Address, IDServer: otherName, BoundAt: 1}); err != nil {
						t.Fatal(err)
					}
				}
				body := []byte(fmt.Sprintf(`{"case":%d}`, i))
				res, err := fx.service.Apply(ctx, config.IdentityServer{ServerName: isName}, body, u)
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
				if res.Replay || !sameUsers(res.Notified, tt.notified) {
					t.Fatalf("Apply = %+v, want %v notified", res, tt.notified)
				}
				for _, user := range []string{alice, bob, carol} {
					wantBound := slices.Contains(tt.holders, user) && !slices.Contains(tt.notified, user)
					if got := boundOn(t, fx.store, user, u.Address, isName); got != wantBound {
						t.Errorf("%s bound on %s: %v, want %v", user, isName, got, wantBound)
					}
					if got, want := boundOn(t, fx.store, user, u.Address, otherName), slices.Contains(tt.onOther, user); got != want {
						t.Errorf("%s bound on %s: %v, want %v", user, otherName, got, want)
					}
					ns := notificationsOf(t, fx.store, user, u.Address)
					if !slices.Contains(tt.notified, user) {
						if len(ns) != 0 {
							t.Errorf("%s notified: %+v", user, ns)
						}
						continue
					}
					want := storage.Notification{UserID: user, Medium: u.Medium, Address: u.Address, Deleted: u.Deleted, MXID: u.MXID, Origin: isName}
					if len(ns) != 1 || stripStream(ns[0]) != want {
						t.Errorf("%s notifications %+v, want one %+v", user, ns, want)
					}
				}
				if len(ev.Changes()) != len(tt.notified) {
					t.Fatalf("after-events %+v, want one per notified user", ev.Changes())
				}
				for _, c := range ev.Changes() {
					if c.Op != policy.OpLost || c.IDServer != isName || c.Address != u.Address || !slices.Contains(tt.notified, c.UserID) {
						t.Errorf("after-event %+v", c)
					}
				}

				// The same request again, after the holders bound again, is a replay.
				for _, h := range tt.holders {
					fx.bind(t, h, u.Medium, u.Address)
				}
				res, err = fx.service.Apply(ctx, config.IdentityServer{ServerName: isName}, body, u)
				if err != nil || !res.Replay || len(res.Notified) != 0 {
					t.Fatalf("replay: Apply = %+v, %v", res, err)
				}
				for _, h := range tt.holders {
					if !boundOn(t, fx.store, h, u.Address, isName) {
						t.Errorf("replay dropped the binding of %s", h)
					}
				}
			})
		}
	})
}

// TestApplyReplayIsPerIdentityServer: the same body from two identity
// servers is two requests.
func TestApplyReplayIsPerIdentityServer(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		fx := newFixture(t, store, config.Bucket{})
		ctx := context.Background()
		body := []byte(`{"threepid":"same@example.org","deleted":true}`)
		u := onupdate.Update{Medium: "email", Address: "same@example.org", Deleted: true}
		for _, is := range []string{isName, otherName} {
			res, err := fx.service.Apply(ctx, config.IdentityServer{ServerName: is}, body, u)
			if err != nil || res.Replay {
				t.Fatalf("%s: Apply = %+v, %v; want a fresh request", is, res, err)
			}
		}
	})
}

// TestApplyCanonicalReplay: the replay identity is the canonical JSON the
// signature covers, so the same update with its keys reordered and spaces
// added is the same request (a replay, which must not drop the binding
// recorded since), while a body that differs in content is a new one.
func TestApplyCanonicalReplay(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		fx := newFixture(t, store, config.Bucket{})
		ctx := context.Background()
		const alice = "@alice:" + hsName
		u := onupdate.Update{Medium: "email", Address: "canon@example.org", Deleted: true, MXID: alice}
		is := config.IdentityServer{ServerName: isName}
		original := []byte(`{"threepid":"canon@example.org","deleted":true,"mxid":"` + alice + `"}`)
		reformatted := []byte("{ \"mxid\" : \"" + alice + "\",\n\t\"deleted\":true , \"threepid\":\"canon@example.org\" }")
		escaped := []byte(`{"threepid":"canon@example.org","deleted":true,"mxid":"\u0040alice:` + hsName + `"}`)
		fx.bind(t, alice, u.Medium, u.Address)
		if res, err := fx.service.Apply(ctx, is, original, u); err != nil || res.Replay || len(res.Notified) != 1 {
			t.Fatalf("first: Apply = %+v, %v", res, err)
		}
		for name, body := range map[string][]byte{"reformatted": reformatted, "escaped": escaped} {
			fx.bind(t, alice, u.Medium, u.Address)
			res, err := fx.service.Apply(ctx, is, body, u)
			if err != nil || !res.Replay {
				t.Fatalf("%s replay: Apply = %+v, %v; want a replay", name, res, err)
			}
			if !boundOn(t, fx.store, alice, u.Address, isName) {
				t.Fatalf("the %s replay dropped the binding recorded since", name)
			}
		}
		other := []byte(`{"threepid":"canon@example.org","deleted":true,"mxid":"` + alice + `","n":1}`)
		if res, err := fx.service.Apply(ctx, is, other, u); err != nil || res.Replay || len(res.Notified) != 1 {
			t.Fatalf("another body: Apply = %+v, %v; want it applied", res, err)
		}
	})
}

// TestApplyTS: with a signed ts, an update outside [now - max_age, now +
// clock_skew] is refused, one inside applies only to bindings recorded at or
// before ts, a repeat with a new ts applies again, and a repeat with the same
// ts is a replay.
func TestApplyTS(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		fx := newFixture(t, store, config.Bucket{})
		now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
		fx.service.Clock = func() time.Time { return now }
		fx.service.MaxAge, fx.service.ClockSkew = 10*time.Minute, time.Minute
		ctx := context.Background()
		is := config.IdentityServer{ServerName: isName}
		const alice, bob, remote = "@alice:" + hsName, "@bob:" + hsName, "@eve:other.tld"
		bindAt := func(user, address string, at time.Time) {
			t.Helper()
			if err := fx.store.UpsertBinding(ctx, storage.Binding{UserID: user, Medium: "email", Address: address, IDServer: isName, BoundAt: at.UnixMilli()}); err != nil {
				t.Fatal(err)
			}
		}
		takeover := func(address string, ts time.Time) ([]byte, onupdate.Update) {
			u := onupdate.Update{Medium: "email", Address: address, MXID: remote, TS: ts.UnixMilli()}
			return []byte(fmt.Sprintf(`{"threepid":%q,"deleted":false,"mxid":%q,"ts":%d}`, address, remote, u.TS)), u
		}

		for _, c := range []struct {
			name string
			ts   time.Time
		}{
			{"older than max_age", now.Add(-10*time.Minute - time.Millisecond)},
			{"further ahead than clock_skew", now.Add(time.Minute + time.Millisecond)},
		} {
			bindAt(alice, "window@example.org", now.Add(-time.Hour))
			body, u := takeover("window@example.org", c.ts)
			res, err := fx.service.Apply(ctx, is, body, u)
			var me *mxerr.Error
			if !errors.Is(err, onupdate.ErrStale) || !errors.As(err, &me) || me.Status != 400 || me.ErrCode != "M_INVALID_PARAM" {
				t.Fatalf("%s: Apply = %+v, %v; want 400 M_INVALID_PARAM (stale)", c.name, res, err)
			}
			if !boundOn(t, fx.store, alice, "window@example.org", isName) {
				t.Fatalf("%s: a refused update dropped the binding", c.name)
			}
		}
		for name, ts := range map[string]time.Time{"max_age old": now.Add(-10 * time.Minute), "clock_skew ahead": now.Add(time.Minute)} {
			address := strings.ReplaceAll(name, " ", "-") + "@example.org"
			bindAt(alice, address, now.Add(-time.Hour))
			body, u := takeover(address, ts)
			if res, err := fx.service.Apply(ctx, is, body, u); err != nil || len(res.Notified) != 1 {
				t.Fatalf("%s: Apply = %+v, %v; want alice notified", name, res, err)
			}
		}

		// alice bound before ts, bob after it (his bind is newer than what
		// the identity server reports): only alice loses hers.
		ts := now.Add(-time.Minute)
		bindAt(alice, "race@example.org", ts.Add(-time.Second))
		bindAt(bob, "race@example.org", ts.Add(time.Millisecond))
		body, u := takeover("race@example.org", ts)
		if res, err := fx.service.Apply(ctx, is, body, u); err != nil || !sameUsers(res.Notified, []string{alice}) {
			t.Fatalf("Apply = %+v, %v; want alice alone notified", res, err)
		}
		if !boundOn(t, fx.store, bob, "race@example.org", isName) {
			t.Fatal("bob's binding, recorded after ts, was dropped")
		}

		// bob takes alice's address, alice binds it again, bob takes it
		// again: the second update is a genuine repeat with its own ts.
		bindAt(alice, "again@example.org", now.Add(-5*time.Minute))
		body, u = takeover("again@example.org", now.Add(-4*time.Minute))
		if res, err := fx.service.Apply(ctx, is, body, u); err != nil || len(res.Notified) != 1 {
			t.Fatalf("first takeover: Apply = %+v, %v", res, err)
		}
		bindAt(alice, "again@example.org", now.Add(-3*time.Minute))
		// Replayed within the window, the first update is a no-op.
		if res, err := fx.service.Apply(ctx, is, body, u); err != nil || !res.Replay {
			t.Fatalf("replay of the first takeover: Apply = %+v, %v; want a replay", res, err)
		}
		body, u = takeover("again@example.org", now.Add(-2*time.Minute))
		if res, err := fx.service.Apply(ctx, is, body, u); err != nil || res.Replay || len(res.Notified) != 1 {
			t.Fatalf("second takeover: Apply = %+v, %v; want alice notified again", res, err)
		}
		if ns := notificationsOf(t, fx.store, alice, "again@example.org"); len(ns) != 2 {
			t.Fatalf("alice has %d notifications about again@example.org, want 2", len(ns))
		}
	})
}

// TestHandler checks statuses, error codes and the requests metric of each
// outcome through HTTP.
func TestHandler(t *testing.T) {
	fx := newFixture(t, storagetest.SQLite(t), config.Bucket{})
	stranger := generateKey(t, "0")
	const alice = "@alice:" + hsName
	deletion := []byte(`{"threepid":"handler@example.org","deleted":true,"mxid":"` + alice + `"}`)
	tests := []struct {
		name    string
		send    func() (status int, body string)
		status  int
		errcode string
		result  string // the metric label counted
		bound   bool   // alice still holds handler@example.org afterwards
	}{
		{"no header", func() (int, string) { return answer(fx.postWithHeader("", deletion)) }, 401, "M_UNAUTHORIZED", "unauthorised", true},
		{"another key", func() (int, string) { return answer(fx.post(t, stranger, isName, deletion, deletion)) }, 401, "M_UNAUTHORIZED", "unauthorised", true},
		{"onupdate: false", func() (int, string) { return answer(fx.post(t, fx.quietKey, quietName, deletion, deletion)) }, 403, "M_FORBIDDEN", "forbidden", true},
		{"not JSON", func() (int, string) { return answer(fx.post(t, fx.key, isName, deletion, []byte("deleted=true"))) }, 400, "M_NOT_JSON", "invalid", true},
		{"too large", func() (int, string) {
			return answer(fx.post(t, fx.key, isName, deletion, []byte(strings.Repeat(" ", onupdate.MaxBody+1))))
		}, 413, "M_TOO_LARGE", "invalid", true},
		{"deleted missing", func() (int, string) {
			b := []byte(`{"threepid":"handler@example.org","mxid":"` + alice + `"}`)
			return answer(fx.post(t, fx.key, isName, b, b))
		}, 400, "M_MISSING_PARAM", "invalid", true},
		{"applied", func() (int, string) { return answer(fx.post(t, fx.key, isName, deletion, deletion)) }, 200, "", "applied", false},
		{"replay", func() (int, string) {
			fx.bind(t, alice, "email", "handler@example.org")
			return answer(fx.post(t, fx.key, isName, deletion, deletion))
		}, 200, "", "no-op", true},
		{"3PID never recorded", func() (int, string) {
			b := []byte(`{"threepid":"nobody@example.org","deleted":false,"mxid":"@x:other.tld"}`)
			return answer(fx.post(t, fx.key, isName, b, b))
		}, 200, "", "no-op", true},
	}
	fx.bind(t, alice, "email", "handler@example.org")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := requestsCounted(t, tt.result)
			status, body := tt.send()
			if status != tt.status || (tt.errcode != "" && !strings.Contains(body, `"errcode":"`+tt.errcode+`"`)) {
				t.Fatalf("answer %d %s, want %d %s", status, body, tt.status, tt.errcode)
			}
			if tt.errcode == "" && body != "{}" {
				t.Fatalf("answer body %s, want {}", body)
			}
			if got := requestsCounted(t, tt.result) - before; got != 1 {
				t.Errorf("onupdate_requests_total{result=%q} grew by %v, want 1", tt.result, got)
			}
			if got := boundOn(t, fx.store, alice, "handler@example.org", isName); got != tt.bound {
				t.Errorf("bound = %v, want %v", got, tt.bound)
			}
		})
	}
}

// TestHandlerRateLimit: each identity server has its own bucket; over it,
// 429 M_LIMIT_EXCEEDED with Retry-After, counted as rate_limited, nothing
// applied.
func TestHandlerRateLimit(t *testing.T) {
	fx := newFixture(t, storagetest.SQLite(t), config.Bucket{PerSecond: 0.001, Burst: 2})
	const alice = "@alice:" + hsName
	fx.bind(t, alice, "email", "limited@example.org")
	noop := []byte(`{"threepid":"nobody@example.org","deleted":true}`)
	for i := range 2 {
		if status, body := answer(fx.post(t, fx.key, isName, noop, noop)); status != 200 {
			t.Fatalf("request %d: %d %s", i, status, body)
		}
	}
	before := requestsCounted(t, "rate_limited")
	deletion := []byte(`{"threepid":"limited@example.org","deleted":true}`)
	w := fx.post(t, fx.key, isName, deletion, deletion)
	if status, body := answer(w); status != 429 || !strings.Contains(body, `"errcode":"M_LIMIT_EXCEEDED"`) {
		t.Fatalf("third request: %d %s, want 429 M_LIMIT_EXCEEDED", status, body)
	}
	if ra := w.Header().Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("Retry-After = %q", ra)
	}
	if got := requestsCounted(t, "rate_limited") - before; got != 1 {
		t.Errorf("rate_limited grew by %v, want 1", got)
	}
	if !boundOn(t, fx.store, alice, "limited@example.org", isName) {
		t.Error("a refused request dropped the binding")
	}
	// The bucket is per identity server.
	if status, body := answer(fx.post(t, fx.otherKey, otherName, noop, noop)); status != 200 {
		t.Fatalf("%s: %d %s, want 200", otherName, status, body)
	}
}

// TestHandlerStoreFailure: a store error is a 500 M_UNKNOWN counted as error.
func TestHandlerStoreFailure(t *testing.T) {
	store, err := backend.Open(context.Background(), backend.SQLite, filepath.Join(t.TempDir(), "closed.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	fx := newFixture(t, store, config.Bucket{})
	before := requestsCounted(t, "error")
	body := []byte(`{"threepid":"a@example.org","deleted":true}`)
	if status, answer := answer(fx.post(t, fx.key, isName, body, body)); status != 500 || !strings.Contains(answer, "M_UNKNOWN") {
		t.Fatalf("answer %d %s, want 500 M_UNKNOWN", status, answer)
	}
	if got := requestsCounted(t, "error") - before; got != 1 {
		t.Errorf("error grew by %v, want 1", got)
	}
}

// requestsCounted reads threepidd_onupdate_requests_total{result}.
func requestsCounted(t *testing.T, result string) float64 {
	return metricstest.Value(t, "threepidd_onupdate_requests_total", "result", result)
}

// answer is the status and body of a recorded response.
func answer(w *httptest.ResponseRecorder) (int, string) {
	return w.Code, w.Body.String()
}

func boundOn(t *testing.T, s storage.Store, user, address, idServer string) bool {
	t.Helper()
	bs, err := s.BindingsOf(context.Background(), user)
	if err != nil {
		t.Fatalf("load bindings: %v", err)
	}
	return slices.ContainsFunc(bs, func(b storage.Binding) bool { return b.Address == address && b.IDServer == idServer })
}

func notificationsOf(t *testing.T, s storage.Store, user, address string) []storage.Notification {
	t.Helper()
	ns, err := s.NotificationsSince(context.Background(), user, 0, 0, 1000)
	if err != nil {
		t.Fatalf("load notifications: %v", err)
	}
	return slices.DeleteFunc(ns, func(n storage.Notification) bool { return n.Address != address })
}

// stripStream zeroes what the store assigns (stream position, time).
func stripStream(n storage.Notification) storage.Notification {
	n.StreamID, n.At = 0, 0
	return n
}

func sameUsers(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
