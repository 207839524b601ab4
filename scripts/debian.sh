# debian.sh: helpers for the project's install scripts, sourced by
# deploy/nginx/setup.sh and deploy/prometheus/setup.sh. Output goes to
# stderr.

# as_root CMD...: runs CMD as root (directly, or through sudo).
as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		echo "need root to run: $*" >&2
		return 1
	fi
}

# apt_get_install PKG...: apt-get install without recommends, quietly.
apt_get_install() {
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

# apt_install PKG...: installs Debian packages with the package lists as they
# are, and once more after apt-get update when that fails (fresh machines have
# no lists). A package's postinst would start its service (nginx on port 80, a
# Prometheus server) unless a policy-rc.d forbids it, as Debian's container
# images do: one is put in place for the install when there is none.
apt_install() {
	command -v apt-get >/dev/null || { echo "no apt-get to install $*" >&2; return 1; }
	local policy=/usr/sbin/policy-rc.d added="" rc=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
		as_root chmod 755 "$policy"
		added=1
	fi
	apt_get_install "$@" || { as_root apt-get update -q >&2 && apt_get_install "$@"; } || rc=$?
	if [ -n "$added" ]; then
		as_root rm -f "$policy"
	fi
	return "$rc"
}
