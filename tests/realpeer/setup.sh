#!/usr/bin/env bash
# setup.sh: install and build the real peers that tests/realpeer runs against.
# Idempotent; a second run only checks what is there.
#
#   - nginx, from Debian's packages, through deploy/nginx/setup.sh (when no
#     nginx binary is installed). Needs root (or sudo) the first time.
#   - Dendrite's commands (dendrite, create-account, generate-config,
#     generate-keys), built from the pinned tools module tools/dendrite and
#     cached under ${XDG_CACHE_HOME:-$HOME/.cache}/threepidd-realpeer/,
#     keyed by the hash of that module's go.mod and go.sum.
#   - matrix-js-sdk for tests/realpeer/js, with `npm ci` from its lockfile,
#     again only when the lockfile changed since the last install.
#
# Progress goes to stderr. stdout carries only KEY=VALUE lines for the Go
# helper (realpeer.Setup):
#   DENDRITE_BIN_DIR  directory holding the four Dendrite commands
#   NGINX             path of the nginx binary
#   NODE              path of the node binary
#   JS_DIR            the Node client directory, with node_modules installed
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
tools="$root/tools/dendrite"
js="$here/js"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/threepidd-realpeer"

log() { echo "setup.sh: $*" >&2; }
die() { log "$*"; exit 1; }

ensure_dendrite() {
	local key dir tmp
	key=$(cat "$tools/go.mod" "$tools/go.sum" | sha256sum | cut -c1-16)
	dir="$cache/dendrite-$key"
	if [ -x "$dir/dendrite" ] && [ -x "$dir/create-account" ] &&
		[ -x "$dir/generate-config" ] && [ -x "$dir/generate-keys" ]; then
		echo "$dir"
		return
	fi
	log "building Dendrite from $tools into $dir (a few minutes the first time)"
	mkdir -p "$cache"
	tmp=$(mktemp -d "$cache/build.XXXXXX")
	# Build into a scratch directory and rename it into place, so an
	# interrupted build never leaves a half-filled cache entry.
	if ! (cd "$tools" && go build -trimpath -o "$tmp/" \
		github.com/element-hq/dendrite/cmd/dendrite \
		github.com/element-hq/dendrite/cmd/create-account \
		github.com/element-hq/dendrite/cmd/generate-config \
		github.com/element-hq/dendrite/cmd/generate-keys) >&2; then
		rm -rf "$tmp"
		die "Dendrite build failed"
	fi
	rm -rf "$dir"
	mv "$tmp" "$dir"
	echo "$dir"
}

ensure_js() {
	command -v node >/dev/null || die "node is missing"
	command -v npm >/dev/null || die "npm is missing"
	local stamp="$js/node_modules/.threepidd-lock-sha256" want
	want=$(sha256sum <"$js/package-lock.json" | cut -c1-64)
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
		return
	fi
	log "installing the Node client's packages (npm ci)"
	# matrix-js-sdk 43 declares node >= 22 and runs on Node 20: npm only
	# warns (EBADENGINE) as long as engine-strict stays off.
	(cd "$js" && npm ci --no-audit --no-fund --loglevel=error) >&2
	echo "$want" >"$stamp"
}

nginx=$(bash "$root/deploy/nginx/setup.sh")
bin=$(ensure_dendrite)
ensure_js

echo "DENDRITE_BIN_DIR=$bin"
echo "NGINX=$nginx"
echo "NODE=$(command -v node)"
echo "JS_DIR=$js"
