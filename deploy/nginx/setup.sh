#!/usr/bin/env bash
# setup.sh: install nginx from Debian's packages (nginx-light, else nginx; its
# service not started), which `make test` uses to put several threepidd
# instances behind threepidd.conf (tests/e2e's cluster tests) and the real-peer
# suite uses in front of Dendrite. Idempotent: nothing is installed when an
# nginx binary is on PATH or in /usr/sbin. Needs root (or sudo) the first
# time. Progress goes to stderr; stdout is the nginx binary's path.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../scripts/debian.sh
. "$here/../../scripts/debian.sh"

find_nginx() {
	command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true
}

if [ -z "$(find_nginx)" ]; then
	echo "deploy/nginx/setup.sh: installing nginx from Debian's packages" >&2
	apt_install nginx-light || apt_install nginx
fi
bin=$(find_nginx)
[ -n "$bin" ] || { echo "deploy/nginx/setup.sh: nginx installed but not found on PATH or in /usr/sbin" >&2; exit 1; }
echo "$bin"
