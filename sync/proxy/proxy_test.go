package proxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/auth"
	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/metrics/metricstest"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/outbound"
	"github.com/threepidd/threepidd/router"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	tpsync "github.com/threepidd/threepidd/sync"
	"github.com/threepidd/threepidd/tests/support"
)

// upstreamRequest is a request the test homeserver received.
type upstreamRequest struct {
	Method, Path, RawQuery string
	Header                 http.Header
	Body                   []byte
}

// testUpstream is a homeserver whose whoami knows two tokens and whose other
// endpoints answer with handle, which each test sets.
type testUpstream struct {
	srv     *httptest.Server
	closing chan struct{}

	mu        gosync.Mutex
	reqs      []upstreamRequest
	handle    http.HandlerFunc
	cancelled int
}

var testTokens = map[string]string{"tok-alice": "@alice:hs", "tok-bob": "@bob:hs"}

func newTestUpstream(t testing.TB) *testUpstream {
	u := &testUpstream{closing: make(chan struct{})}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/account/whoami") {
			user, ok := testTokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
			if !ok {
				mxerr.Write(w, r, mxerr.UnknownToken)
				return
			}
			mxerr.WriteJSON(w, http.StatusOK, map[string]string{"user_id": user})
			return
		}
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, upstreamRequest{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Clone(), body})
		handle := u.handle
		u.mu.Unlock()
		handle(w, r)
	}))
	t.Cleanup(func() {
		close(u.closing)
		u.srv.Close()
	})
	return u
}

func (u *testUpstream) setHandler(h http.HandlerFunc) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.handle, u.reqs = h, nil
}

func (u *testUpstream) requests() []upstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upstreamRequest(nil), u.reqs...)
}

func (u *testUpstream) cancellations() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cancelled
}

// hold blocks until the client cancels (counted) or the test ends.
func (u *testUpstream) hold(r *http.Request) {
	select {
	case <-r.Context().Done():
		u.mu.Lock()
		u.cancelled++
		u.mu.Unlock()
	case <-u.closing:
	}
}

// answer writes body as a JSON 200.
func answer(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = io.WriteString(w, body)
}

// proxyEnv is a Proxy in front of a testUpstream.
type proxyEnv struct {
	store  storage.Store
	stream *tpsync.Stream
	up     *testUpstream
	url    string
	client *http.Client
}

func newProxyEnv(t testing.TB, store storage.Store) *proxyEnv {
	return newBudgetedProxyEnv(t, store, nil)
}

// newBudgetedProxyEnv is newProxyEnv with a splice budget of its own (nil:
// the default one).
func newBudgetedProxyEnv(t testing.TB, store storage.Store, budget *Budget) *proxyEnv {
	up := newTestUpstream(t)
	url, st := newProxy(t, store, up.srv.URL, budget)
	return &proxyEnv{store: store, stream: st, up: up, url: url,
		client: &http.Client{Transport: &http.Transport{DisableCompression: true}}}
}

// newProxy serves a Proxy with budget in front of the homeserver at
// upstreamURL and returns its URL and tpsync.Stream.
func newProxy(t testing.TB, store storage.Store, upstreamURL string, budget *Budget) (string, *tpsync.Stream) {
	hs, err := homeserver.New(config.Homeserver{URL: upstreamURL, TokenCacheTTL: time.Minute}, outbound.NewTransport())
	if err != nil {
		t.Fatal(err)
	}
	st := tpsync.New(store, tpsync.Options{})
	t.Cleanup(st.Close)
	routes := router.NewRouter()
	(&Proxy{Stream: st, Auth: &auth.Auth{Homeserver: hs}, Homeserver: hs, Budget: budget}).Register(routes)
	srv := httptest.NewServer(router.Wrap(routes, nil))
	t.Cleanup(srv.Close)
	return srv.URL, st
}

// response is an answer of the proxy.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (e *proxyEnv) do(t testing.TB, method, pathQuery string, header map[string]string, body string) response {
	t.Helper()
	r, err := e.send(method, pathQuery, header, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is do for goroutines other than the test's.
func (e *proxyEnv) send(method, pathQuery string, header map[string]string, body string) (response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.url+pathQuery, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, pathQuery, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	if cl := resp.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(data)) {
		return response{}, fmt.Errorf("Content-Length %s for a body of %d bytes", cl, len(data))
	}
	return response{resp.StatusCode, resp.Header, data}, nil
}

var alice = map[string]string{"Authorization": "Bearer tok-alice", "User-Agent": "test-agent/1"}

func gzipped(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = zw.Write([]byte(s))
	_ = zw.Close()
	return b.Bytes()
}

func TestProxySync(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		e := newProxyEnv(t, store)
		pos := storagetest.Notify(t, store, "@alice:hs", "a@example.org", false, "@eve:other", time.Now())
		storagetest.Notify(t, store, "@bob:hs", "b@example.org", true, "@bob:hs", time.Now())
		now := pos + 1
		const upBody = `{"next_batch":"s9_x~1.2","rooms":{"join":{"!r:hs":{"timeline":{"events":[]}}}}}`
		aliceSec := `"threepids":{"a@example.org":{"deleted":false,"mxid":"@eve:other","medium":"email"}}`
		tok := func(up string, pos int64) string { return tpsync.NewToken(up, pos).String() }
		spliced := func(pos int64, sec string) string {
			b := `{"next_batch":"` + tok("s9_x~1.2", pos) + `","rooms":{"join":{"!r:hs":{"timeline":{"events":[]}}}}`
			if sec != "" {
				b += "," + sec
			}
			return b + "}"
		}
		plain := func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Upstream", "kept")
			answer(w, upBody)
		}

		tests := []struct {
			name   string
			handle http.HandlerFunc
			path   string // "" means /_matrix/client/v3/sync
			query  string
			header map[string]string // nil means alice's
			// wantQuery is the query the homeserver must get ("-": no request).
			wantQuery  string
			wantStatus int
			wantBody   string
			check      func(t *testing.T, r response, up []upstreamRequest)
		}{
			{name: "first sync: the section, a composite next_batch", handle: plain,
				query: "?filter=%7B%22room%22%3A%7B%7D%7D&access_token=tok-alice", header: map[string]string{"User-Agent": "agent/2"},
				wantQuery: "filter=%7B%22room%22%3A%7B%7D%7D", wantStatus: 200, wantBody: spliced(now, aliceSec),
				check: func(t *testing.T, r response, up []upstreamRequest) {
					h := up[0].Header
					if h.Get("Authorization") != "Bearer tok-alice" || h.Get("User-Agent") != "agent/2" ||
						h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("Accept-Encoding") != "identity" {
						t.Errorf("upstream headers %v", h)
					}
					if r.header.Get("X-Upstream") != "kept" || r.header.Get("Content-Type") != "application/json" {
						t.Errorf("response headers %v", r.header)
					}
				}},
			{name: "composite since: upstream part forwarded, nothing new", handle: plain,
				query:     "?since=" + tok("s8 &=ü", now) + "&timeout=0&set_presence=offline",
				wantQuery: "since=s8+%26%3D%C3%BC&timeout=0&set_presence=offline", wantStatus: 200, wantBody: spliced(now, "")},
			{name: "composite since before a notification", handle: plain,
				query: "?since=" + tok("s8", pos-1), wantQuery: "since=s8", wantStatus: 200, wantBody: spliced(pos, aliceSec)},
			{name: "plain since: position now", handle: plain,
				query: "?since=s8_1", wantQuery: "since=s8_1", wantStatus: 200, wantBody: spliced(now, "")},
			{name: "pending notifications: upstream asked not to wait", handle: plain,
				query: "?timeout=30000&since=" + tok("s8", pos-1), wantQuery: "timeout=0&since=s8", wantStatus: 200, wantBody: spliced(pos, aliceSec)},
			{name: "garbled token", handle: plain, query: "?since=tpd1.x.czg", wantQuery: "-", wantStatus: 400,
				check: func(t *testing.T, r response, _ []upstreamRequest) {
					var m map[string]string
					if json.Unmarshal(r.body, &m) != nil || m["errcode"] != "M_INVALID_PARAM" {
						t.Errorf("body %s", r.body)
					}
				}},
			{name: "other statuses pass through",
				handle: func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Retry-After", "3")
					mxerr.WriteJSON(w, 429, map[string]any{"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 3000})
				},
				wantQuery: "", wantStatus: 429, wantBody: `{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":3000}`,
				check: func(t *testing.T, r response, _ []upstreamRequest) {
					if r.header.Get("Retry-After") != "3" {
						t.Errorf("headers %v", r.header)
					}
				}},
			{name: "gzip: decompressed, spliced, sent plain",
				handle: func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Encoding", "gzip")
					_, _ = w.Write(gzipped(upBody))
				},
				header: map[string]string{"Authorization": "Bearer tok-alice", "Accept-Encoding": "br;q=1, gzip;q=0.5"}, wantQuery: "", wantStatus: 200, wantBody: spliced(now, aliceSec),
				check: func(t *testing.T, r response, up []upstreamRequest) {
					if up[0].Header.Get("Accept-Encoding") != "gzip" || r.header.Get("Content-Encoding") != "" {
						t.Errorf("upstream Accept-Encoding %q, response Content-Encoding %q",
							up[0].Header.Get("Accept-Encoding"), r.header.Get("Content-Encoding"))
					}
				}},
			{name: "gzip error passes through compressed",
				handle: func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Encoding", "gzip")
					w.WriteHeader(502)
					_, _ = w.Write(gzipped(`{"errcode":"M_UNKNOWN"}`))
				},
				header: map[string]string{"Authorization": "Bearer tok-alice", "Accept-Encoding": "gzip"}, wantQuery: "", wantStatus: 502, wantBody: string(gzipped(`{"errcode":"M_UNKNOWN"}`)),
				check: func(t *testing.T, r response, _ []upstreamRequest) {
					if r.header.Get("Content-Encoding") != "gzip" {
						t.Errorf("headers %v", r.header)
					}
				}},
			{name: "gzip without a section",
				handle: func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Encoding", "gzip")
					_, _ = w.Write(gzipped(upBody))
				},
				query: "?since=" + tok("s8", now), header: map[string]string{"Authorization": "Bearer tok-alice", "Accept-Encoding": "gzip"},
				wantQuery: "since=s8", wantStatus: 200, wantBody: spliced(now, ""),
				check: func(t *testing.T, r response, _ []upstreamRequest) {
					if r.header.Get("Content-Encoding") != "" {
						t.Errorf("headers %v", r.header)
					}
				}},
			{name: "token beyond the streamed head: read whole",
				handle: func(w http.ResponseWriter, r *http.Request) {
					answer(w, `{"rooms":{"pad":"`+strings.Repeat("y", 70<<10)+`"},"next_batch":"s9"}`)
				},
				query: "?since=" + tok("s8", now), wantQuery: "since=s8", wantStatus: 200,
				wantBody: `{"rooms":{"pad":"` + strings.Repeat("y", 70<<10) + `"},"next_batch":"` + tok("s9", now) + `"}`},
			{name: "token cut by the first read",
				handle: func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.WriteString(w, `{"next_batch":"s9_x`)
					w.(http.Flusher).Flush()
					time.Sleep(10 * time.Millisecond) // let the proxy read the first part alone
					_, _ = io.WriteString(w, `~1.2","rooms":{}}`)
				},
				query: "?since=" + tok("s8", now), wantQuery: "since=s8", wantStatus: 200,
				wantBody: `{"next_batch":"` + tok("s9_x~1.2", now) + `","rooms":{}}`},
			{name: "an encoding we did not ask for passes through",
				handle: func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Encoding", "br")
					_, _ = io.WriteString(w, "\x0b\x02\x80{}\x03")
				},
				wantQuery: "", wantStatus: 200, wantBody: "\x0b\x02\x80{}\x03",
				check: func(t *testing.T, r response, _ []upstreamRequest) {
					if r.header.Get("Content-Encoding") != "br" {
						t.Errorf("headers %v", r.header)
					}
				}},
			{name: "chunked body",
				handle: func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.WriteString(w, upBody[:10])
					w.(http.Flusher).Flush()
					_, _ = io.WriteString(w, upBody[10:])
				},
				wantQuery: "", wantStatus: 200, wantBody: spliced(now, aliceSec)},
			{name: "not a sync body: passed as it is",
				handle:    func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "<html>hello</html>") },
				wantQuery: "", wantStatus: 200, wantBody: "<html>hello</html>"},
			{name: "r0 too", handle: plain, path: "/_matrix/client/r0/sync", query: "?since=s8_1", wantQuery: "since=s8_1", wantStatus: 200, wantBody: spliced(now, "")},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e.up.setHandler(tt.handle)
				header, path := tt.header, tt.path
				if header == nil {
					header = alice
				}
				if path == "" {
					path = "/_matrix/client/v3/sync"
				}
				r := e.do(t, "GET", path+tt.query, header, "")
				if r.status != tt.wantStatus || (tt.wantBody != "" && string(r.body) != tt.wantBody) {
					t.Fatalf("got %d %s\nwant %d %s", r.status, r.body, tt.wantStatus, tt.wantBody)
				}
				up := e.up.requests()
				switch {
				case tt.wantQuery == "-" && len(up) != 0:
					t.Fatalf("the homeserver was asked: %+v", up)
				case tt.wantQuery != "-" && (len(up) != 1 || up[0].RawQuery != tt.wantQuery || up[0].Path != path):
					t.Fatalf("upstream requests %+v, want one to %s?%s", up, path, tt.wantQuery)
				}
				if tt.check != nil {
					tt.check(t, r, up)
				}
			})
		}
	})
}

func TestProxyWake(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		e := newProxyEnv(t, store)
		start := storagetest.Notify(t, store, "@alice:hs", "old@example.org", false, "@eve:other", time.Now())
		since := tpsync.NewToken("s5", start).String()
		// holdAll long-polls every request; holdFirst only the first of a test.
		// (On Postgres, the wake of the notification above may come late, and
		// be read as nothing new.)
		holdAll := func(w http.ResponseWriter, r *http.Request) { e.up.hold(r) }
		holdFirst := func(w http.ResponseWriter, r *http.Request) {
			if len(e.up.requests()) == 1 {
				e.up.hold(r)
				return
			}
			answer(w, `{"next_batch":"s6","pos":"6"}`)
		}
		type result struct {
			response
			err error
		}
		longPoll := func(method, path, body string) <-chan result {
			done := make(chan result, 1)
			go func() {
				r, err := e.send(method, path, alice, body)
				done <- result{r, err}
			}()
			support.WaitFor(t, "the condition", func() bool { return e.stream.Hub().Waiting() == 1 && len(e.up.requests()) >= 1 }, 10*time.Second)
			return done
		}
		receive := func(done <-chan result) response {
			select {
			case r := <-done:
				if r.err != nil {
					t.Fatal(r.err)
				}
				return r.response
			case <-time.After(10 * time.Second):
				t.Fatal("the long-poll did not return")
				return response{}
			}
		}

		t.Run("a notification ends the long-poll", func(t *testing.T) {
			e.up.setHandler(holdAll)
			cancelledBefore := e.up.cancellations()
			done := longPoll("GET", "/_matrix/client/v3/sync?timeout=30000&since="+since, "")
			began := time.Now()
			pos := storagetest.Notify(t, store, "@alice:hs", "a@example.org", true, "@alice:hs", time.Now())
			r := receive(done)
			want := `{"next_batch":"` + tpsync.NewToken("s5", pos).String() + `","threepids":{"a@example.org":{"deleted":true,"mxid":"@alice:hs","medium":"email"}}}`
			if r.status != 200 || string(r.body) != want {
				t.Fatalf("got %d %s\nwant %s", r.status, r.body, want)
			}
			if d := time.Since(began); d > 2*time.Second {
				t.Fatalf("woken after %v", d)
			}
			support.WaitFor(t, "the condition", func() bool { return e.up.cancellations() > cancelledBefore }, 10*time.Second)
			since = tpsync.NewToken("s5", pos).String()
		})
		t.Run("a wake with nothing new polls on", func(t *testing.T) {
			e.up.setHandler(holdFirst)
			done := longPoll("GET", "/_matrix/client/v3/sync?timeout=30000&since="+since, "")
			e.stream.Hub().Wake("@alice:hs")
			r := receive(done)
			if want := `{"next_batch":"` + tpsync.NewToken("s6", start+1).String() + `","pos":"6"}`; string(r.body) != want {
				t.Fatalf("got %s, want %s", r.body, want)
			}
			up := e.up.requests()
			timeout, _ := strconv.Atoi(strings.TrimPrefix(strings.Split(up[len(up)-1].RawQuery, "&")[0], "timeout="))
			if len(up) != 2 || timeout <= 0 || timeout >= 30000 {
				t.Fatalf("upstream requests %+v; want a second one for the time left", up)
			}
		})
		t.Run("sliding sync", func(t *testing.T) {
			e.up.setHandler(holdAll)
			body := `{"extensions":{"threepids":{"enabled":true}}}`
			done := longPoll("POST", SlidingSyncPath+"?timeout=30000&pos="+tpsync.NewToken("5", start+1).String(), body)
			pos := storagetest.Notify(t, store, "@alice:hs", "s@example.org", false, "@eve:other", time.Now())
			r := receive(done)
			want := `{"pos":"` + tpsync.NewToken("5", pos).String() + `","lists":{},"rooms":{},"extensions":{"threepids":{"s@example.org":{"deleted":false,"mxid":"@eve:other","medium":"email"}}}}`
			if r.status != 200 || string(r.body) != want {
				t.Fatalf("got %d %s\nwant %s", r.status, r.body, want)
			}
		})
		t.Run("a plain upstream token is woken too", func(t *testing.T) {
			// Its position is "now" as the request began: a notification that
			// arrives during the long-poll is after it, so it ends the poll.
			e.up.setHandler(holdAll)
			done := longPoll("GET", "/_matrix/client/v3/sync?timeout=30000&since=s5", "")
			pos := storagetest.Notify(t, store, "@alice:hs", "p@example.org", false, "@eve:other", time.Now())
			r := receive(done)
			want := `{"next_batch":"` + tpsync.NewToken("s5", pos).String() + `","threepids":{"p@example.org":{"deleted":false,"mxid":"@eve:other","medium":"email"}}}`
			if r.status != 200 || string(r.body) != want {
				t.Fatalf("got %d %s\nwant %s", r.status, r.body, want)
			}
			since = tpsync.NewToken("s5", pos).String()
		})
		// Last: a drain is for good.
		t.Run("a drain answers at once with the upstream token kept", func(t *testing.T) {
			e.up.setHandler(holdAll)
			done := longPoll("GET", "/_matrix/client/v3/sync?timeout=30000&since="+since, "")
			e.stream.Drain()
			r := receive(done)
			var body struct {
				NextBatch string                  `json:"next_batch"`
				Threepids map[string]tpsync.Entry `json:"threepids"`
			}
			if err := json.Unmarshal(r.body, &body); r.status != 200 || err != nil || body.Threepids == nil || len(body.Threepids) != 0 {
				t.Fatalf("got %d %s (%v), want 200 with an empty threepids section", r.status, r.body, err)
			}
			if tok, err := tpsync.ParseToken(body.NextBatch); err != nil || tok.Upstream != "s5" {
				t.Fatalf("next_batch %q (%v): want the client's upstream token s5", body.NextBatch, err)
			}
			// A long-poll that comes during the shutdown answers at once too.
			r = e.do(t, "GET", "/_matrix/client/v3/sync?timeout=30000&since="+since, alice, "")
			if r.status != 200 || !strings.Contains(string(r.body), `"threepids":{}`) {
				t.Fatalf("a long-poll after the drain: %d %s", r.status, r.body)
			}
		})
	})
}

func TestProxySlidingSync(t *testing.T) {
	e := newProxyEnv(t, storagetest.SQLite(t))
	pos := storagetest.Notify(t, e.store, "@alice:hs", "a@example.org", true, "", time.Now())
	const upBody = `{"pos":"8","lists":{"all":{"count":0}},"rooms":{},"extensions":{"e2ee":{}}}`
	e.up.setHandler(func(w http.ResponseWriter, r *http.Request) { answer(w, upBody) })
	query := "?timeout=0&pos=" + tpsync.NewToken("7", pos-1).String()

	t.Run("enabled", func(t *testing.T) {
		body := `{"lists":{"all":{"ranges":[[0,10]]}},"extensions":{"threepids":{"enabled":true},"e2ee":{"enabled":true}}}`
		r := e.do(t, "POST", SlidingSyncPath+query, alice, body)
		want := `{"pos":"` + tpsync.NewToken("8", pos).String() + `","lists":{"all":{"count":0}},"rooms":{},"extensions":{"e2ee":{},"threepids":{"a@example.org":{"deleted":true,"medium":"email"}}}}`
		if r.status != 200 || string(r.body) != want {
			t.Fatalf("got %d %s\nwant %s", r.status, r.body, want)
		}
		up := e.up.requests()[0]
		if up.RawQuery != "timeout=0&pos=7" || string(up.Body) != `{"lists":{"all":{"ranges":[[0,10]]}},"extensions":{"e2ee":{"enabled":true}}}` {
			t.Fatalf("upstream got %s %s", up.RawQuery, up.Body)
		}
	})
	e.up.setHandler(func(w http.ResponseWriter, r *http.Request) { answer(w, upBody) })
	t.Run("not enabled: untouched", func(t *testing.T) {
		body := `{"lists":{},"extensions":{"threepids":{"enabled":false}}}`
		r := e.do(t, "POST", SlidingSyncPath+query, alice, body)
		if r.status != 200 || string(r.body) != upBody {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		up := e.up.requests()[0]
		if up.RawQuery != "timeout=0&pos=7" || string(up.Body) != body {
			t.Fatalf("upstream got %s %s", up.RawQuery, up.Body)
		}
	})
}

func TestProxyPassTokens(t *testing.T) {
	e := newProxyEnv(t, storagetest.SQLite(t))
	composite := tpsync.NewToken("s3_34~x.0", 12).String()
	tests := []struct {
		name, path, wantPath, wantQuery string
		wantStatus                      int
	}{
		{"keys/changes", "/_matrix/client/v3/keys/changes?from=" + composite + "&to=s4_34",
			"/_matrix/client/v3/keys/changes", "from=s3_34~x.0&to=s4_34", 200},
		{"messages", "/_matrix/client/r0/rooms/%21room%3Ahs/messages?dir=b&from=" + composite + "&to=" + composite + "&limit=5",
			"/_matrix/client/r0/rooms/%21room%3Ahs/messages", "dir=b&from=s3_34~x.0&to=s3_34~x.0&limit=5", 200},
		{"messages in a room whose ID has an encoded /", "/_matrix/client/v3/rooms/%21a%2Fb%3Ahs/messages?from=" + composite,
			"/_matrix/client/v3/rooms/%21a%2Fb%3Ahs/messages", "from=s3_34~x.0", 200},
		{"messages with a pagination token", "/_matrix/client/v3/rooms/%21room%3Ahs/messages?from=t1-3_34",
			"/_matrix/client/v3/rooms/%21room%3Ahs/messages", "from=t1-3_34", 200},
		{"members at", "/_matrix/client/v3/rooms/%21room%3Ahs/members?not_membership=leave&at=" + composite,
			"/_matrix/client/v3/rooms/%21room%3Ahs/members", "not_membership=leave&at=s3_34~x.0", 200},
		{"relations", "/_matrix/client/v1/rooms/%21room%3Ahs/relations/%24ev?from=" + composite + "&to=" + composite,
			"/_matrix/client/v1/rooms/%21room%3Ahs/relations/%24ev", "from=s3_34~x.0&to=s3_34~x.0", 200},
		{"relations of a type", "/_matrix/client/v1/rooms/%21room%3Ahs/relations/%24ev/m.thread?dir=f&from=" + composite,
			"/_matrix/client/v1/rooms/%21room%3Ahs/relations/%24ev/m.thread", "dir=f&from=s3_34~x.0", 200},
		{"relations of a type and event type", "/_matrix/client/v1/rooms/%21room%3Ahs/relations/%24ev/m.annotation/m.reaction?to=" + composite + "&recurse=true",
			"/_matrix/client/v1/rooms/%21room%3Ahs/relations/%24ev/m.annotation/m.reaction", "to=s3_34~x.0&recurse=true", 200},
		{"garbled", "/_matrix/client/v3/keys/changes?from=tpd1.1.%3F", "", "", 400},
		{"garbled relations token", "/_matrix/client/v1/rooms/%21room%3Ahs/relations/%24ev?to=tpd1.x.czE", "", "", 400},
		{"garbled members token", "/_matrix/client/r0/rooms/%21room%3Ahs/members?at=tpd1.1", "", "", 400},
	}
	const upBody = `{"chunk":[],"start":"t1-3_34","end":"tpd1.looks.ours"}`
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.up.setHandler(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Upstream", "kept")
				answer(w, upBody)
			})
			r := e.do(t, "GET", tt.path, alice, "")
			if r.status != tt.wantStatus {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			up := e.up.requests()
			if tt.wantStatus != 200 {
				if len(up) != 0 {
					t.Fatalf("forwarded: %+v", up)
				}
				return
			}
			if string(r.body) != upBody || r.header.Get("X-Upstream") != "kept" {
				t.Fatalf("answer changed: %s %v", r.body, r.header)
			}
			if len(up) != 1 || up[0].Path != tt.wantPath || up[0].RawQuery != tt.wantQuery || up[0].Header.Get("Authorization") != "Bearer tok-alice" {
				t.Fatalf("upstream got %+v", up)
			}
		})
	}
}

// countingWriter keeps the head and tail of what it is given, and its length.
type countingWriter struct {
	n          int
	head, tail []byte
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if len(c.head) < 64 {
		c.head = append(c.head, p[:min(len(p), 64-len(c.head))]...)
	}
	c.tail = append(c.tail, p[max(0, len(p)-512):]...)
	if len(c.tail) > 512 { // keep the last 512 bytes, in place (no allocation)
		c.tail = c.tail[:copy(c.tail, c.tail[len(c.tail)-512:])]
	}
	c.n += len(p)
	return len(p), nil
}

// TestProxyLargeBody sends a 20 MB body through the proxy, plain and gzip,
// with a section (read whole and spliced) and without (streamed), and bounds
// what the exchange allocates, an upper bound on its peak memory: under 3× the
// body when spliced (4× for gzip, decompressed into buffers that double, its
// length unknown until its end), under 1 MB when streamed.
func TestProxyLargeBody(t *testing.T) {
	e := newProxyEnv(t, storagetest.SQLite(t))
	pos := storagetest.Notify(t, e.store, "@alice:hs", "a@example.org", true, "", time.Now())
	const size = 20 << 20
	body := []byte(`{"next_batch":"s1","pad":"` + strings.Repeat("x", size) + `"}`)
	compressed := gzipped(string(body))
	token := `"` + tpsync.NewToken("s1", pos).String() + `"`
	for _, tt := range []struct {
		gzip, section bool
	}{{false, true}, {true, true}, {false, false}, {true, false}} {
		t.Run(fmt.Sprintf("gzip=%v,section=%v", tt.gzip, tt.section), func(t *testing.T) {
			e.up.setHandler(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if tt.gzip {
					w.Header().Set("Content-Encoding", "gzip")
					_, _ = w.Write(compressed)
					return
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				_, _ = w.Write(body)
			})
			since, section, limit := tpsync.NewToken("s0", pos), "", uint64(1<<20)
			if tt.section {
				since = tpsync.NewToken("s0", pos-1)
				section = `,"threepids":{"a@example.org":{"deleted":true,"medium":"email"}}`
				limit = 3 * uint64(len(body))
				if tt.gzip {
					limit = 4 * uint64(len(body))
				}
			}
			wantLen := len(body) - len(`"s1"`) + len(token) + len(section)
			wantContentLength := int64(wantLen)
			if tt.gzip && !tt.section {
				wantContentLength = -1 // streamed as decompressed: chunked
			}
			req, _ := http.NewRequest("GET", e.url+"/_matrix/client/v3/sync?since="+since.String(), nil)
			req.Header.Set("Authorization", "Bearer tok-alice")
			req.Header.Set("Accept-Encoding", "gzip")
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var got countingWriter
			buf := make([]byte, 32<<10)
			_, err = io.CopyBuffer(&got, resp.Body, buf)
			resp.Body.Close()
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(got.head, []byte(`{"next_batch":`+token)) || !bytes.HasSuffix(got.tail, []byte(`xxx"`+section+`}`)) ||
				got.n != wantLen || resp.ContentLength != wantContentLength {
				t.Fatalf("got %d bytes (Content-Length %d), want %d: %s … %s", got.n, resp.ContentLength, wantLen, got.head, got.tail)
			}
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("allocated %.2f MB for a %d MB body (%.3f×)", float64(alloc)/(1<<20), size>>20, float64(alloc)/float64(len(body)))
			if alloc > limit {
				t.Fatalf("allocated %d bytes for a body of %d, over %d", alloc, len(body), limit)
			}
		})
	}
}

// TestProxyAbortsBrokenStream: an upstream body that breaks off while it is
// streamed (a truncated gzip stream) breaks the client's connection too, never
// ending as a body that looks whole.
func TestProxyAbortsBrokenStream(t *testing.T) {
	e := newProxyEnv(t, storagetest.SQLite(t))
	full := gzipped(`{"next_batch":"s1","pad":"` + strings.Repeat("x", 4<<20) + `"}`)
	e.up.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = w.Write(full[:len(full)/2])
	})
	_, err := e.send("GET", "/_matrix/client/v3/sync?since=s0", map[string]string{"Authorization": "Bearer tok-alice", "Accept-Encoding": "gzip"}, "")
	if err == nil {
		t.Fatal("a truncated upstream body reached the client as a whole answer")
	}
}

// TestProxySpliceBudget: a body with a section that does not fit in the
// splice budget is streamed without it, its token keeping the client's
// position, and the section comes with the next sync, once; a body whose
// token is not in its head and that does not fit is a 502, never a 500; the
// budget is whole again afterwards.
func TestProxySpliceBudget(t *testing.T) {
	budget := NewBudget(1 << 20)
	e := newBudgetedProxyEnv(t, storagetest.SQLite(t), budget)
	pos := storagetest.Notify(t, e.store, "@alice:hs", "a@example.org", true, "", time.Now())
	big := `{"next_batch":"s2","pad":"` + strings.Repeat("x", 4<<20) + `"}`
	section := `"threepids":{"a@example.org":{"deleted":true,"medium":"email"}}`
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			deferredBefore := metricstest.Value(t, "threepidd_sync_sections_deferred_total", "endpoint", "sync")
			e.up.setHandler(func(w http.ResponseWriter, r *http.Request) {
				if gz {
					w.Header().Set("Content-Encoding", "gzip")
					_, _ = w.Write(gzipped(big))
					return
				}
				answer(w, big)
			})
			since := tpsync.NewToken("s1", pos-1).String()
			r := e.do(t, "GET", "/_matrix/client/v3/sync?since="+since, map[string]string{"Authorization": "Bearer tok-alice", "Accept-Encoding": "gzip"}, "")
			want := strings.Replace(big, `"s2"`, `"`+tpsync.NewToken("s2", pos-1).String()+`"`, 1)
			if r.status != 200 || string(r.body) != want {
				t.Fatalf("over the budget: %d, %d bytes: %.100s", r.status, len(r.body), r.body)
			}
			if got := metricstest.Value(t, "threepidd_sync_sections_deferred_total", "endpoint", "sync") - deferredBefore; got != 1 {
				t.Fatalf("%v sections deferred, want 1", got)
			}
			e.up.setHandler(func(w http.ResponseWriter, r *http.Request) { answer(w, `{"next_batch":"s3"}`) })
			r = e.do(t, "GET", "/_matrix/client/v3/sync?since="+tpsync.NewToken("s2", pos-1).String(), alice, "")
			if want := `{"next_batch":"` + tpsync.NewToken("s3", pos).String() + `",` + section + `}`; string(r.body) != want {
				t.Fatalf("the next sync: %s, want %s", r.body, want)
			}
			if used := budget.Used(); used != 0 {
				t.Fatalf("%d bytes of the budget still held", used)
			}
		})
	}
	t.Run("token not in the head", func(t *testing.T) {
		e.up.setHandler(func(w http.ResponseWriter, r *http.Request) {
			answer(w, `{"pad":"`+strings.Repeat("x", 4<<20)+`","next_batch":"s2"}`)
		})
		r := e.do(t, "GET", "/_matrix/client/v3/sync?since="+tpsync.NewToken("s1", pos).String(), alice, "")
		if r.status != http.StatusBadGateway || !strings.Contains(string(r.body), `"errcode":"M_UNKNOWN"`) {
			t.Fatalf("got %d %.200s", r.status, r.body)
		}
		if used := budget.Used(); used != 0 {
			t.Fatalf("%d bytes of the budget still held", used)
		}
	})
}
