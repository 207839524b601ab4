#!/usr/bin/env bash
# callgrind.sh: instructions per request of each side of BenchmarkSyncProxy
# (threepidd, bare ReverseProxy, direct), counted by valgrind's callgrind:
# repeatable on a loaded machine, where timings are not. Each side runs at
# two request counts; the difference divided by the difference in requests
# is the cost of one request, client and in-process upstream included (the
# same for every side), setup excluded.
#
#   bash tests/perf/peers/callgrind.sh [N1 N2]      (default 1000 3000)
#
# Two figures per side: with the garbage collector off (GOGC=off: what the
# code itself executes) and on (GOGC=100: plus the collection its
# allocations cause). GOMAXPROCS=1, or idle Ps spinning for work would be
# counted; asynchronous preemption off, or its signals abort callgrind.
# Needs valgrind (Debian's package). The callgrind.out files stay in the
# printed directory for callgrind_annotate.
set -euo pipefail
n1=${1:-1000}
n2=${2:-3000}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
out=$(mktemp -d "${TMPDIR:-/tmp}/callgrind-sync.XXXXXX")
(cd "$here" && go test -c -o "$out/peers.test" .)
count() { # side gogc n -> instructions
	GOMAXPROCS=1 GOGC=$2 GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind \
		--callgrind-out-file="$out/callgrind.out.$1.$2.$3" "$out/peers.test" \
		-test.run '^$' -test.bench "BenchmarkSyncProxy/$1\$" -test.benchtime "${3}x" >/dev/null 2>&1
	awk '/^summary:/ {print $2}' "$out/callgrind.out.$1.$2.$3"
}
echo "instructions per request (N=$n1 and N=$n2; files in $out)"
printf '%-10s %12s %12s\n' side GOGC=off GOGC=100
for side in threepidd bare direct; do
	row=""
	for gogc in off 100; do
		a=$(count "$side" "$gogc" "$n1")
		b=$(count "$side" "$gogc" "$n2")
		row="$row $(((b - a) / (n2 - n1)))"
	done
	printf '%-10s %12s %12s\n' "$side" $row
done
