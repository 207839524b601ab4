// Package realpeer runs threepidd's real peers for end-to-end tests: a real
// Dendrite homeserver (SQLite, federation off, shared-secret registration),
// nginx in front of threepidd and the homeserver with the operators' location
// blocks from deploy/nginx/threepidd.conf, and matrix-js-sdk journeys through
// a Node script.
//
// Everything but this comment sits behind the build tag realpeer, so that
// `go test ./...` stays fast. Run the suite with
//
//	go test -tags realpeer ./tests/realpeer/...
//
// Setup runs setup.sh, which installs nginx, builds (or finds cached)
// Dendrite binaries and installs the Node client's packages.
package realpeer
