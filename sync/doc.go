// Package sync is threepidd's /sync extension: the "threepids" section of the
// 3PID onupdate proposal, through which a client learns that one of its user's
// identity-server bindings was taken over or deleted, and can warn the user.
//
// This package is the library, for a Go homeserver that embeds it; it needs
// nothing of threepidd's HTTP layer (only a storage.Store):
//
//   - [Stream] reads a user's notifications after a stream position and returns
//     the section ([Section]) and the next position; [Stream.Wait] long-polls for
//     the next one, and [Stream.Watch] gives a context that ends when it comes, for
//     servers with their own long-poll loop. One subscription to
//     [storage.Store.Subscribe] fans wake-ups out to every waiter of a user; a
//     waiter costs a context and a list node, no goroutine.
//   - [Token] is the composite since/next_batch token: the homeserver's own token
//     plus our position, opaque and URL-safe. [ParseToken] accepts plain tokens
//     (clients that synced before threepidd was deployed) as "position now".
//   - [SpliceSync] and [SpliceSlidingSync] insert the section and the composite
//     token into a response body without decoding it; the rest stays byte-identical.
//
// Package sync/proxy is the /sync proxy built on it, for homeservers that do
// not embed it: the /sync, simplified sliding sync (MSC4186), /keys/changes,
// /rooms/{roomId}/messages, /members and /relations requests are routed to
// threepidd, which forwards
// them to the homeserver with its part of the tokens removed and splices the
// section into the answer. A long-polling /sync returns as soon as a
// notification for its user is appended, on this instance or (Postgres
// LISTEN/NOTIFY) any instance sharing the database.
//
// Importers alias the package (e.g. tpsync) to keep the standard library's sync.
package sync
