package security

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/backend"
	tpsync "github.com/threepidd/threepidd/sync"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
)

// TestMain removes the threepidd binary TestSyncMemoryBounded builds.
func TestMain(m *testing.M) { os.Exit(support.RunTests(m)) }

const (
	// memoryClients is how many first syncs TestSyncMemoryBounded holds at once.
	memoryClients = 200
	// memoryBody is the size of the upstream body each of them gets.
	memoryBody = 20 << 20
	// memoryOverhead is what threepidd may use beyond its splice budget:
	// the runtime, the pools, a 256 KiB head buffer per body being relayed,
	// and the garbage of the bodies spliced before the collector runs.
	memoryOverhead = 384 << 20
)

// leanHomeserver answers whoami for the tokens "tok-<i>" (user @u<i>) and
// /sync with one shared body: big (next_batch "s1") for a first sync,
// {"next_batch":"s2"} after it. It allocates nothing per request, so that
// 200 concurrent 20 MB answers cost the test process nothing.
func leanHomeserver(t *testing.T, big []byte) *httptest.Server {
	small := []byte(`{"next_batch":"s2"}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/account/whoami") {
			i, ok := strings.CutPrefix(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), "tok-")
			if !ok {
				mxerr.Write(w, r, mxerr.UnknownToken)
				return
			}
			mxerr.WriteJSON(w, http.StatusOK, map[string]string{"user_id": "@u" + i + ":" + harness.ServerName})
			return
		}
		body := small
		if r.URL.Query().Get("since") == "" {
			body = big
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// syncAnswer is what a client checked of one answer: its token, and whether
// it carried the client's section.
type syncAnswer struct {
	token   tpsync.Token
	section bool
}

// syncOnce sends a /sync of client i and checks the answer as it streams in,
// without holding it: the head carries a composite token, the body is the
// upstream one byte for byte (only its length and ends are compared: the
// middle is filler), and it ends with i's section or without any.
func syncOnce(ctx context.Context, client *http.Client, api string, i int, since string, upstream []byte) (syncAnswer, error) {
	q := ""
	if since != "" {
		q = "?since=" + since
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/_matrix/client/v3/sync"+q, nil)
	if err != nil {
		return syncAnswer{}, err
	}
	req.Header.Set("Authorization", fmt.Sprintf("Bearer tok-%d", i))
	resp, err := client.Do(req)
	if err != nil {
		return syncAnswer{}, err
	}
	defer resp.Body.Close()
	var got edges
	if _, err := io.CopyBuffer(&got, resp.Body, make([]byte, 32<<10)); err != nil {
		return syncAnswer{}, fmt.Errorf("client %d: read: %w", i, err)
	}
	const prefix = `{"next_batch":"`
	end := bytes.IndexByte(got.head[min(len(prefix), len(got.head)):], '"')
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(got.head, []byte(prefix)) || end < 0 {
		return syncAnswer{}, fmt.Errorf("client %d: %d %q", i, resp.StatusCode, got.head)
	}
	raw := string(got.head[len(prefix) : len(prefix)+end])
	tok, err := tpsync.ParseToken(raw)
	if err != nil || !tok.HasPos {
		return syncAnswer{}, fmt.Errorf("client %d: next_batch %q is not a composite token", i, raw)
	}
	section := fmt.Sprintf(`,"threepids":{"u%d@example.org":{"deleted":true,"medium":"email"}}}`, i)
	rest := upstream[bytes.IndexByte(upstream[len(prefix):], '"')+len(prefix):] // from the upstream token's closing quote
	want := len(prefix) + len(raw) + len(rest)
	tail := rest[max(0, len(rest)-16):]
	switch {
	case got.n == want && bytes.HasSuffix(got.tail, tail):
		return syncAnswer{tok, false}, nil
	case got.n == want-1+len(section) && bytes.HasSuffix(got.tail, append(bytes.Clone(tail[:len(tail)-1]), section...)):
		return syncAnswer{tok, true}, nil
	}
	return syncAnswer{}, fmt.Errorf("client %d: %d bytes ending %q, want %d bytes of the upstream body with or without %s", i, got.n, got.tail, want, section)
}

// edges keeps the first and last 256 bytes written to it, and the length.
type edges struct {
	n          int
	head, tail []byte
}

func (e *edges) Write(p []byte) (int, error) {
	if len(e.head) < 256 {
		e.head = append(e.head, p[:min(len(p), 256-len(e.head))]...)
	}
	e.tail = append(e.tail, p[max(0, len(p)-256):]...)
	if len(e.tail) > 256 {
		e.tail = e.tail[:copy(e.tail, e.tail[len(e.tail)-256:])]
	}
	e.n += len(p)
	return len(p), nil
}

// TestSyncMemoryBounded: 200 concurrent first syncs, each with a 3PID
// notification pending and a 20 MB answer from the homeserver, through the
// threepidd binary with the default splice budget. Its peak resident memory
// stays under the budget plus a fixed overhead (holding every body to splice
// it took over 4 GB), and every client gets the homeserver's body with a
// composite token: with its section, or, when the body did not fit in the
// budget, without it and at its old position, the section then coming with
// its next sync. Each client sees its section exactly once.
func TestSyncMemoryBounded(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "threepidd.db")
	store, err := backend.Open(ctx, backend.SQLite, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for i := range memoryClients {
		if _, err := store.AppendNotification(ctx, storage.Notification{UserID: fmt.Sprintf("@u%d:%s", i, harness.ServerName),
			Medium: "email", Address: fmt.Sprintf("u%d@example.org", i), Deleted: true, Origin: "id.test", At: time.Now().UnixMilli()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	big := []byte(`{"next_batch":"s1","rooms":{"join":{}},"pad":"` + strings.Repeat("x", memoryBody) + `"}`)
	hs := leanHomeserver(t, big)
	configPath := filepath.Join(dir, "threepidd.yaml")
	if err := os.WriteFile(configPath, fmt.Appendf(nil, "server_name: %s\nlisten: 127.0.0.1:0\n"+
		"database: {driver: sqlite, dsn: %q}\nhomeserver: {url: %q, token_cache_ttl: 10m, mirror: none}\n",
		harness.ServerName, dbPath, hs.URL), 0o600); err != nil {
		t.Fatal(err)
	}
	p, api, _ := support.StartThreepidd(t, configPath)
	before, err := p.PeakRSS()
	if err != nil {
		t.Fatal(err)
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: memoryClients, DisableCompression: true}}
	first := make([]syncAnswer, memoryClients)
	errs := make(chan error, memoryClients)
	var wg gosync.WaitGroup
	began := time.Now()
	for i := range memoryClients {
		wg.Go(func() {
			var err error
			first[i], err = syncOnce(ctx, client, api, i, "", big)
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	peak, err := p.PeakRSS()
	if err != nil {
		t.Fatal(err)
	}
	spliced := 0
	for _, a := range first {
		if a.section {
			spliced++
		}
	}
	t.Logf("%d syncs of %d MB in %v: %d spliced, %d deferred; peak RSS %d MB (%d MB at start)",
		memoryClients, memoryBody>>20, time.Since(began).Round(time.Millisecond), spliced, memoryClients-spliced, peak>>20, before>>20)
	limit := int64(config.DefaultSpliceBudget + memoryOverhead)
	if support.RaceEnabled {
		limit *= 3 // the race detector's shadow memory (1.1 GB measured)
	}
	if peak > limit {
		t.Errorf("peak RSS %d MB, over the splice budget plus overhead (%d MB)", peak>>20, limit>>20)
	}

	for i, a := range first {
		if !a.section && a.token.Pos != 0 {
			t.Fatalf("client %d: section deferred, but its token moved to position %d", i, a.token.Pos)
		}
		next, err := syncOnce(ctx, client, api, i, a.token.String(), []byte(`{"next_batch":"s2"}`))
		if err != nil {
			t.Fatal(err)
		}
		if next.section == a.section {
			t.Fatalf("client %d: section in the first sync %v, in the second %v: want it exactly once", i, a.section, next.section)
		}
		last, err := syncOnce(ctx, client, api, i, next.token.String(), []byte(`{"next_batch":"s2"}`))
		if err != nil || last.section {
			t.Fatalf("client %d: third sync: %+v %v", i, last, err)
		}
	}
}
