package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/tests/support"
)

// syncPath is the client /sync endpoint the wake-up benchmark long-polls.
const syncPath = "/_matrix/client/v3/sync"

// BenchWake measures wake-ups: a user long-polls /sync (timeout=30000) on
// poll, poll's first identity server sends a signed onupdate taking one of
// the user's bindings over to accept (poll itself, or another instance on
// the same store), and the long-poll answers with the section. One
// iteration is one wake-up. It reports p50 and p99 "sent" (from the
// onupdate's send, its signature check and transaction included) and
// "accepted" (from accept's 200; negative when the client had its answer
// first), and logs the machine's load before and after.
func BenchWake(b *testing.B, poll, accept *Env) {
	b.Helper()
	ctx := context.Background()
	// The function runs more than once on one database: a fresh user and
	// fresh addresses keep earlier runs' notifications and onupdates out.
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	alice := poll.NewUser("alice" + run)
	is := poll.IS[0]
	address := func(i int) string { return fmt.Sprintf("r%s-a%d@example.org", run, i) }
	for i := range b.N {
		if err := poll.Server.Store.UpsertBinding(ctx, storage.Binding{UserID: alice.ID, Medium: "email",
			Address: address(i), IDServer: is.Name(), BoundAt: time.Now().UnixMilli()}); err != nil {
			b.Fatal(err)
		}
	}
	client := support.Client{HTTP: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}}
	isClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 10 * time.Second}
	type result struct {
		at   time.Time
		resp support.Response
		err  error
	}
	syncOn := func(query, agent string) <-chan result {
		done := make(chan result, 1)
		go func() {
			r, err := client.Send(ctx, support.Request{Method: http.MethodGet, URL: poll.URL + syncPath + "?" + query,
				Token: alice.Token, Header: http.Header{"User-Agent": {agent}}})
			if err == nil && r.Status != http.StatusOK {
				err = fmt.Errorf("status %d: %s", r.Status, r.Body)
			}
			done <- result{time.Now(), r, err}
		}()
		return done
	}
	nextBatch := func(r result) string {
		var body struct {
			NextBatch string `json:"next_batch"`
		}
		if r.err != nil || json.Unmarshal(r.resp.Body, &body) != nil || body.NextBatch == "" {
			b.Fatalf("sync: %v: %.300s", r.err, r.resp.Body)
		}
		return body.NextBatch
	}
	next := nextBatch(<-syncOn("timeout=0", "first"))
	fromSend := make([]time.Duration, 0, b.N)
	fromAccept := make([]time.Duration, 0, b.N)
	b.Logf("machine load (1, 5, 15 min) before: %s", support.LoadAverage())
	b.ResetTimer()
	for i := range b.N {
		agent := "bench-" + strconv.Itoa(i)
		done := syncOn("timeout=30000&since="+url.QueryEscape(next), agent)
		// The homeserver sees the request once poll watches for alice.
		for deadline := time.Now().Add(10 * time.Second); poll.HS.LastHeaders(syncPath).Get("User-Agent") != agent; {
			if time.Now().After(deadline) {
				b.Fatalf("long-poll %d did not reach the homeserver in 10 s", i)
			}
			time.Sleep(50 * time.Microsecond)
		}
		sent := time.Now()
		if err := onupdate.Send(ctx, isClient, is.Key(), is.Name(), ServerName, accept.URL,
			onupdate.Body{Threepid: address(i), MXID: "@mallory:evil.test"}); err != nil {
			b.Fatal(err)
		}
		accepted := time.Now()
		r := <-done
		next = nextBatch(r)
		if !strings.Contains(string(r.resp.Body), `"`+address(i)+`"`) {
			b.Fatalf("woken without the section: %.300s", r.resp.Body)
		}
		fromSend = append(fromSend, r.at.Sub(sent))
		fromAccept = append(fromAccept, r.at.Sub(accepted))
	}
	b.StopTimer()
	b.Logf("machine load (1, 5, 15 min) after: %s", support.LoadAverage())
	support.ReportPercentiles(b, "sent", fromSend)
	support.ReportPercentiles(b, "accepted", fromAccept)
}

// WakeRateLimits turns off the rate limits a wake-up benchmark would hit
// (onupdate_per_server's default 50/s among them); for Options.RateLimitYAML.
const WakeRateLimits = "{requesttoken_per_ip: {per_second: 0}, requesttoken_per_address: {per_second: 0}, onupdate_per_server: {per_second: 0}}"
