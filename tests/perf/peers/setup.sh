#!/usr/bin/env bash
# setup.sh: install the load generator of TestProxyBench, wrk, from Debian's
# packages when it is missing. Idempotent; a second run only checks. Needs
# root (or sudo) the first time. Progress goes to stderr; stdout carries one
# line, WRK=<path of the wrk binary>, for the Go side.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)

# shellcheck source=../../../scripts/debian.sh
. "$root/scripts/debian.sh"

if ! command -v wrk >/dev/null; then
	echo "setup.sh: installing wrk from Debian's packages" >&2
	apt_install wrk
	command -v wrk >/dev/null || { echo "setup.sh: wrk installed but not on PATH" >&2; exit 1; }
fi
echo "WRK=$(command -v wrk)"
