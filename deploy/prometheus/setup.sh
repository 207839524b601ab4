#!/usr/bin/env bash
# setup.sh: install promtool (Debian's prometheus package, its server not
# started), which `make test` uses to check threepidd-rules.yml and run its
# unit tests (tests/monitoring). Idempotent: nothing happens when promtool is
# on PATH. Needs root (or sudo) the first time. Progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../scripts/debian.sh
. "$here/../../scripts/debian.sh"

command -v promtool >/dev/null && exit 0
echo "deploy/prometheus/setup.sh: installing promtool from Debian's prometheus package" >&2
apt_install prometheus
command -v promtool >/dev/null || { echo "deploy/prometheus/setup.sh: prometheus installed but promtool is not on PATH" >&2; exit 1; }
