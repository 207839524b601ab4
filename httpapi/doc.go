// Package httpapi is the request plumbing every HTTP handler of threepidd
// shares, without a router: the client-server API prefixes, reading and
// decoding request bodies within their limits, and what a request says about
// its sender (the access token, the client address behind trusted proxies).
// It knows nothing of the features: handler packages (clientapi, adminapi,
// federationapi, sync/proxy) import it, never the other way round.
package httpapi
