// Package peers measures threepidd against a real Dendrite on this machine,
// side by side (TestRealPeerBench; BENCHMARKS.md, "Real peers"), with the
// peers of package realpeer.
//
// Everything but this comment sits behind the build tag realpeer, as
// package realpeer does. Run it with
//
//	bash tests/realpeer/setup.sh
//	THREEPIDD_TEST_REALPEER_BENCH=1 THREEPIDD_TEST_POSTGRES=... \
//	    go test -tags realpeer -run TestRealPeerBench -v -timeout 20m ./tests/perf/peers/
package peers
