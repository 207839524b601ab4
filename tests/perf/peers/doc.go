// Package peers measures threepidd against real peers on this machine, side
// by side, with the peers of package realpeer (BENCHMARKS.md):
//
//   - TestRealPeerBench: threepidd next to Dendrite itself ("Real peers");
//   - TestProxyBench: an incremental /sync straight to Dendrite, through Go's
//     bare httputil.ReverseProxy and through threepidd, loaded by wrk ("/sync
//     proxy vs bare ReverseProxy");
//   - BenchmarkSyncProxy, its unit-level twin in front of an in-process
//     homeserver (no build tag), for allocations, CPU profiles and
//     instruction counts (callgrind.sh).
//
// The tests sit behind the build tag realpeer, as package realpeer does, and
// are opt-in. Run them with
//
//	THREEPIDD_TEST_PROXY_BENCH=1 THREEPIDD_TEST_POSTGRES=... \
//	    go test -tags realpeer -run TestProxyBench -v -timeout 30m ./tests/perf/peers/
//	THREEPIDD_TEST_REALPEER_BENCH=1 THREEPIDD_TEST_POSTGRES=... \
//	    go test -tags realpeer -run TestRealPeerBench -v -timeout 20m ./tests/perf/peers/
//
// (the first installs wrk from Debian's packages through setup.sh, the
// realpeer setup builds Dendrite).
package peers
