package fakes

// What the fake homeserver records of the calls it gets, for tests to inspect.

import (
	"maps"
	"net/http"
	"net/url"
	"slices"
)

// WhoamiCalls counts the requests to /account/whoami, answered or refused.
func (hs *Homeserver) WhoamiCalls() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.whoamiCalls
}

// LastHeaders returns the headers of the last request to path (the URL path,
// e.g. /_matrix/client/v3/account/whoami), or nil if there was none.
func (hs *Homeserver) LastHeaders(path string) http.Header {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.lastHeaders[path].Clone()
}

// RelayCalls lists the requests to the user-interactive endpoints, in order.
func (hs *Homeserver) RelayCalls() []RelayCall {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return slices.Clone(hs.relayCalls)
}

// DeleteDevicesCalls counts the requests to POST /delete_devices.
func (hs *Homeserver) DeleteDevicesCalls() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.deleteDevicesCalls
}

// Query-log keys for the endpoints that take stream tokens.
const (
	hsQueriesSync       = "sync"
	hsQueriesKeyChanges = "keys/changes"
	hsQueriesMessages   = "messages"
	hsQueriesRelations  = "relations"
	hsQueriesMembers    = "members"
)

// SyncRequests lists the query parameters of every /sync request, in order.
func (hs *Homeserver) SyncRequests() []url.Values { return hs.queriesOf(hsQueriesSync) }

// KeyChangesRequests lists the query parameters of every /keys/changes request.
func (hs *Homeserver) KeyChangesRequests() []url.Values { return hs.queriesOf(hsQueriesKeyChanges) }

// MessagesRequests lists the query parameters of every /rooms/{roomId}/messages request.
func (hs *Homeserver) MessagesRequests() []url.Values { return hs.queriesOf(hsQueriesMessages) }

// RelationsRequests lists the query parameters of every
// /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]] request.
func (hs *Homeserver) RelationsRequests() []url.Values { return hs.queriesOf(hsQueriesRelations) }

// MembersRequests lists the query parameters of every /rooms/{roomId}/members request.
func (hs *Homeserver) MembersRequests() []url.Values { return hs.queriesOf(hsQueriesMembers) }

func (hs *Homeserver) queriesOf(key string) []url.Values {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	out := make([]url.Values, len(hs.queries[key]))
	for i, q := range hs.queries[key] {
		out[i] = maps.Clone(q)
	}
	return out
}

// SyncCancellations counts long-polling /sync requests the client abandoned
// before the fake answered.
func (hs *Homeserver) SyncCancellations() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.syncCancellations
}

// AdminCalls counts the requests to the admin API, answered or refused.
func (hs *Homeserver) AdminCalls() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.adminCalls
}
