package crash

import (
	"context"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage/storagetest"
)

// outboxRetryBound is DESIGN.md's "after a start, due work is retried within
// 30 s", with a margin for the start itself.
const outboxRetryBound = 35 * time.Second

// TestUnbindOutboxAfterSIGKILL: an unbind made while the identity server is
// down answers no-support and is queued, the binding record kept; threepidd
// is killed with SIGKILL, the identity server comes back, threepidd is
// restarted, and the queued unbind reaches the identity server (signed, 200)
// and drops the record, within the bound.
func TestUnbindOutboxAfterSIGKILL(t *testing.T) {
	for _, b := range storagetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			f := newFixture(t, b)
			u := f.newUser("outbox")
			const address = "queued@example.org"
			ctx := context.Background()
			f.start()
			c := newClient(f.URL)
			defer c.close()
			if err := c.bind(ctx, f.IS, u, address); err != nil {
				t.Fatalf("bind: %v", err)
			}
			f.IS.Stop()
			a, err := c.expect(ctx, 200, "POST", unbindPath, u.Token, map[string]any{
				"medium": "email", "address": address, "id_server": isName,
			})
			if err != nil {
				t.Fatal(err)
			}
			var res struct {
				Result string `json:"id_server_unbind_result"`
			}
			if err := json.Unmarshal(a.Body, &res); err != nil || res.Result != "no-support" {
				t.Fatalf("unbind with the identity server down answered %s, want no-support", a)
			}
			if got := adminBindings(ctx, t, c, u); len(got) != 1 || got[0] != address {
				t.Fatalf("binding records while the unbind is queued: %v, want [%s]", got, address)
			}

			f.kill()
			f.IS.Start()
			began := time.Now()
			f.start()
			c = newClient(f.URL)
			defer c.close()
			deadline := began.Add(outboxRetryBound)
			for {
				calls := f.IS.UnbindCalls()
				done := len(calls) > 0 && calls[len(calls)-1].Status == 200
				if done && len(adminBindings(ctx, t, c, u)) == 0 {
					last := calls[len(calls)-1]
					if !last.Verified || last.MXID != u.ID || last.Address != address || last.Origin != serverName {
						t.Fatalf("the retried unbind was %+v", last)
					}
					t.Logf("the queued unbind completed %v after the restart began", time.Since(began).Round(time.Millisecond))
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the queued unbind did not complete within %v of the restart: calls %+v, records %v",
						outboxRetryBound, calls, adminBindings(ctx, t, c, u))
				}
				time.Sleep(50 * time.Millisecond)
			}
			if _, ok := f.IS.Bindings()[address]; ok {
				t.Fatal("the identity server still holds the binding")
			}
			f.stop()
			f.checkLog()
		})
	}
}

// adminBindings lists the addresses recorded as bound for u, through the
// admin API.
func adminBindings(ctx context.Context, t *testing.T, c *client, u user) []string {
	t.Helper()
	req := "/_threepidd/admin/v1/users/" + url.PathEscape(u.ID) + "/threepids"
	a, err := c.expect(ctx, 200, "GET", req, adminToken, nil)
	if err != nil {
		t.Fatalf("admin API: %v", err)
	}
	var body struct {
		Bindings []struct {
			Address string `json:"address"`
		} `json:"bindings"`
	}
	if err := json.Unmarshal(a.Body, &body); err != nil {
		t.Fatalf("admin API answered %s", a)
	}
	out := make([]string, 0, len(body.Bindings))
	for _, b := range body.Bindings {
		out = append(out, b.Address)
	}
	return out
}
