// Package load is threepidd's load tool. TestLoad starts threepidd in-process
// with its fakes on 127.0.0.1 (tests/harness, a homeserver and two identity
// servers), seeds users and their 3PIDs straight into the store, and drives,
// for a bounded time with many concurrent clients:
//
//   - GET /account/3pid, for random users (so that many tokens are not in
//     threepidd's whoami cache) and for 100 users (whose tokens stay cached),
//   - the requestToken → submit_token → /3pid/add flow (e-mail, with the
//     user-interactive auth relayed to the homeserver),
//   - POST /3pid/bind then /3pid/unbind on an identity server,
//   - signed onupdate calls from an identity server taking bindings over.
//
// Beside threepidd, in the same run and on the same store, a [Baseline] — a
// bare net/http server doing only the store transactions each request needs —
// is driven the same way. The two are measured in alternating rounds, so that
// background load on a shared machine hits both alike, and the test prints a
// Markdown table per storage backend: requests/s, p50 and p99 latency and
// errors of each operation on each side, and the p99 ratio.
//
// It is opt-in, so that `go test ./...` stays fast:
//
//	THREEPIDD_TEST_LOAD=1 THREEPIDD_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	    go test ./tests/perf/load -run TestLoad -v -timeout 30m
//
// Knobs (environment): THREEPIDD_TEST_LOAD_DURATION (measured time per operation
// and side, default 20s), THREEPIDD_TEST_LOAD_USERS (default 10000, each with 3
// e-mail addresses), THREEPIDD_TEST_LOAD_CLIENTS (concurrent clients, default 100),
// THREEPIDD_TEST_LOAD_ROUNDS (rounds the duration is split into, default 10) and
// THREEPIDD_TEST_LOAD_WARMUP (unmeasured load per operation and side, default 2s).
//
// THREEPIDD_TEST_LOAD_OPS selects operations by key (list, list-cached, flow, bind,
// onupdate; comma-separated), e.g. to profile one with -cpuprofile.
//
// BenchmarkList is the unit-level counterpart: GET /account/3pid against
// threepidd and the baseline from parallel clients (`go test -bench`).
package load
