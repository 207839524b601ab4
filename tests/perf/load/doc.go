// Package load is threepidd's load tool. TestLoad starts threepidd in-process
// with its fakes on 127.0.0.1 (tests/harness, a homeserver and two identity
// servers), seeds a computed population of users (tests/perf/seed: user i
// holds 1 to 3 e-mail addresses, its first bound on an identity server;
// the fake homeserver serves the same population, token "load_<i>") straight
// into the store in bulk, and drives, for a bounded time with many
// concurrent clients:
//
//   - GET /account/3pid, for random users (so that many tokens are not in
//     threepidd's whoami cache) and for 100 users (whose tokens stay cached),
//   - the requestToken → submit_token → /3pid/add flow (e-mail, with the
//     user-interactive auth relayed to the homeserver), each step measured,
//   - POST /3pid/bind then /3pid/unbind on an identity server,
//   - POST /3pid/delete of an address bound nowhere,
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
// and side, default 20s), THREEPIDD_TEST_LOAD_USERS (default 10000),
// THREEPIDD_TEST_LOAD_SIZES (several user counts, comma-separated: one run
// each on a fresh database, then a table of how each p99 grew from the
// smallest to the largest, against the bounds: 1.2× on Postgres,
// 1.5× on SQLite), THREEPIDD_TEST_LOAD_CLIENTS (concurrent clients, default 100),
// THREEPIDD_TEST_LOAD_RATE (iterations a second per operation and side: an
// open loop, which a slower side cannot slow down; default: a closed loop),
// THREEPIDD_TEST_LOAD_ROUNDS (rounds the duration is split into, default 10) and
// THREEPIDD_TEST_LOAD_WARMUP (unmeasured load per operation and side, default 2s).
//
// Every operation draws its users from THREEPIDD_TEST_LOAD_ACTIVE (default
// 10000) of the seeded ones, spread evenly over the population, so that at
// every size threepidd's token cache sees the same traffic and only the
// store grows. With several sizes, every size has a rig of its own, all
// alive at once, and the rounds rotate over every size and side.
//
// THREEPIDD_TEST_LOAD_OPS selects operations by key (list, list-cached, flow, bind,
// delete, onupdate; comma-separated), e.g. to profile one with -cpuprofile.
//
// The run at a million users (BENCHMARKS.md, "A million"):
//
//	THREEPIDD_TEST_LOAD=1 THREEPIDD_TEST_POSTGRES=... \
//	    THREEPIDD_TEST_LOAD_SIZES=10000,1000000 THREEPIDD_TEST_LOAD_DURATION=5s \
//	    THREEPIDD_TEST_LOAD_WARMUP=1s THREEPIDD_TEST_LOAD_ROUNDS=5 \
//	    go test ./tests/perf/load -run TestLoad -v -timeout 60m
//
// BenchmarkList is the unit-level counterpart: GET /account/3pid against
// threepidd and the baseline from parallel clients (`go test -bench`).
package load
