// Package routing holds the tests of the reverse-proxy configurations threepidd
// ships (deploy/nginx/threepidd.conf and the README's Caddy block) against the
// homeserver route lists in testdata/routes, without running a proxy: the
// real nginx runs in tests/realpeer.
package routing
