package fakes

// /sync and the other endpoints that take stream tokens: /keys/changes,
// /rooms/{roomId}/messages, /rooms/{roomId}/members and
// /rooms/{roomId}/relations/....

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/threepidd/threepidd/mxerr"
)

// PushEvent appends event to userID's stream; a /sync of that user that is
// waiting returns at once with it.
func (hs *Homeserver) PushEvent(userID string, event json.RawMessage) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.pos++
	hs.events = append(hs.events, hsEvent{pos: hs.pos, userID: userID, event: slices.Clone(event)})
	close(hs.wake)
	hs.wake = make(chan struct{})
}

// SetSyncPadding makes /sync bodies at least size bytes long (before
// compression) by adding a filler member; 0 turns it off.
func (hs *Homeserver) SetSyncPadding(size int) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.syncPadding = size
}

// SetSyncGzip makes /sync answer gzip-compressed bodies to clients that send
// Accept-Encoding: gzip.
func (hs *Homeserver) SetSyncGzip(on bool) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.syncGzip = on
}

// begin records the query under key and authenticates the request (guests allowed).
func (hs *Homeserver) begin(r *http.Request, key string) (req hsRequester, current int64, err error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.queries[key] = append(hs.queries[key], r.URL.Query())
	req, err = hs.authenticate(r, true)
	return req, hs.pos, err
}

func hsSyncToken(pos int64) string { return "s" + strconv.FormatInt(pos, 10) + hsSyncTokenSuffix }

// hsTopoToken is the pagination token /messages answers as "end".
func hsTopoToken(pos int64) string { return "t1-" + strconv.FormatInt(pos, 10) + hsSyncTokenSuffix }

// hsParseSyncToken reads a token made by hsSyncToken, valid up to current.
func hsParseSyncToken(token string, current int64) (int64, bool) {
	rest, ok := strings.CutPrefix(token, "s")
	if !ok {
		return 0, false
	}
	digits, ok := strings.CutSuffix(rest, hsSyncTokenSuffix)
	if !ok {
		return 0, false
	}
	pos, err := strconv.ParseUint(digits, 10, 63)
	return int64(pos), err == nil && int64(pos) <= current
}

// hsValidPagination accepts a sync token or a token made by hsTopoToken.
func hsValidPagination(token string, current int64) bool {
	if _, ok := hsParseSyncToken(token, current); ok {
		return true
	}
	rest, ok := strings.CutPrefix(token, "t")
	if !ok {
		return false
	}
	topo, stream, ok := strings.Cut(rest, "-")
	if _, err := strconv.ParseUint(topo, 10, 63); err != nil || !ok {
		return false
	}
	_, ok = hsParseSyncToken("s"+stream, current)
	return ok
}

var hsInvalidStreamToken = hsErr(http.StatusBadRequest, "M_UNKNOWN", "Invalid stream token")

// hsQueryInt is Synapse's parse_integer for a non-negative query parameter.
func hsQueryInt(q url.Values, name string, def int) (int, error) {
	if !q.Has(name) {
		return def, nil
	}
	n, err := strconv.Atoi(q.Get(name))
	if err != nil {
		return 0, mxerr.InvalidParam.WithMessage("Query parameter %q must be an integer.", name)
	}
	if n < 0 {
		return 0, mxerr.InvalidParam.WithMessage("Query parameter %q must be a positive integer.", name)
	}
	return n, nil
}

// hsQueryBool is Synapse's parse_boolean.
func hsQueryBool(q url.Values, name string, def bool) (bool, error) {
	switch q.Get(name) {
	case "":
		return def, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, mxerr.InvalidParam.WithMessage("Boolean query parameter %q must be one of ['true', 'false']", name)
}

// serveSync answers at once on an initial sync or when the user has events
// after since; otherwise it waits for PushEvent up to timeout (at most
// hsMaxSyncWait) and answers with no events.
func (hs *Homeserver) serveSync(w http.ResponseWriter, r *http.Request) error {
	req, current, err := hs.begin(r, hsQueriesSync)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	var since int64
	initial := q.Get("since") == ""
	if !initial {
		var ok bool
		if since, ok = hsParseSyncToken(q.Get("since"), current); !ok {
			return hsInvalidStreamToken
		}
	}
	timeoutMS, err := hsQueryInt(q, "timeout", 0)
	if err != nil {
		return err
	}
	deadline := time.NewTimer(min(time.Duration(timeoutMS)*time.Millisecond, hsMaxSyncWait))
	defer deadline.Stop()
	expired := false
	for {
		hs.mu.Lock()
		events, pos, wake := hs.eventsSince(req.userID, since), hs.pos, hs.wake
		hs.mu.Unlock()
		if len(events) > 0 || initial || expired {
			return hs.writeSync(w, r, pos, events)
		}
		select {
		case <-wake:
		case <-deadline.C:
			expired = true
		case <-hs.closing:
			expired = true
		case <-r.Context().Done():
			hs.mu.Lock()
			hs.syncCancellations++
			hs.mu.Unlock()
			return nil
		}
	}
}

// eventsSince lists userID's events after position since. hs.mu must be held.
func (hs *Homeserver) eventsSince(userID string, since int64) []json.RawMessage {
	var out []json.RawMessage
	for _, e := range hs.events {
		if e.pos > since && e.userID == userID {
			out = append(out, e.event)
		}
	}
	return out
}

func (hs *Homeserver) writeSync(w http.ResponseWriter, r *http.Request, pos int64, events []json.RawMessage) error {
	join := map[string]any{}
	if len(events) > 0 {
		join["!fake:"+hs.serverName] = map[string]any{"timeline": map[string]any{"events": events, "limited": false}}
	}
	body, err := json.Marshal(map[string]any{
		"next_batch":   hsSyncToken(pos),
		"account_data": map[string]any{"events": []any{}},
		"rooms":        map[string]any{"join": join},
	})
	if err != nil {
		return fmt.Errorf("encode sync response: %w", err)
	}
	hs.mu.Lock()
	padding, gz := hs.syncPadding, hs.syncGzip
	hs.mu.Unlock()
	body = hsPad(body, padding)
	if gz && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		if _, err := zw.Write(body); err != nil {
			return fmt.Errorf("gzip sync response: %w", err)
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("gzip sync response: %w", err)
		}
		body = buf.Bytes()
		w.Header().Set("Content-Encoding", "gzip")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return nil
}

// hsPad grows a JSON object to size bytes with a filler member, if it is shorter.
func hsPad(body []byte, size int) []byte {
	head := `,"` + hsPaddingField + `":"`
	filler := size - len(body) - len(head) - 1
	if size <= len(body) || filler < 0 {
		return body
	}
	out := make([]byte, 0, size)
	out = append(out, body[:len(body)-1]...)
	out = append(out, head...)
	out = append(out, bytes.Repeat([]byte("x"), filler)...)
	return append(out, `"}`...)
}

// serveKeyChanges is GET /keys/changes: from is required, to optional; both
// must be stream tokens this fake issued.
func (hs *Homeserver) serveKeyChanges(w http.ResponseWriter, r *http.Request) error {
	_, current, err := hs.begin(r, hsQueriesKeyChanges)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if !q.Has("from") {
		return mxerr.MissingParam.WithMessage("Missing string query parameter 'from'")
	}
	for _, name := range []string{"from", "to"} {
		if _, ok := hsParseSyncToken(q.Get(name), current); q.Has(name) && !ok {
			return hsInvalidStreamToken
		}
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string][]string{"changed": {}, "left": {}})
	return nil
}

// serveMessages is GET /rooms/{roomId}/messages: from, when given, must be a
// sync token or a pagination token this fake issued. The room is always empty.
func (hs *Homeserver) serveMessages(w http.ResponseWriter, r *http.Request) error {
	_, current, err := hs.begin(r, hsQueriesMessages)
	if err != nil {
		return err
	}
	from := r.URL.Query().Get("from")
	switch {
	case from == "":
		from = hsSyncToken(current)
	case !hsValidPagination(from, current):
		return hsInvalidStreamToken
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]any{"chunk": []any{}, "start": from, "end": hsTopoToken(current)})
	return nil
}

// serveRelations is GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]
// (v1): from and to, when given, must be sync or pagination tokens this fake
// issued. The event has no children.
func (hs *Homeserver) serveRelations(w http.ResponseWriter, r *http.Request) error {
	_, current, err := hs.begin(r, hsQueriesRelations)
	if err != nil {
		return err
	}
	for _, name := range []string{"from", "to"} {
		if q := r.URL.Query(); q.Has(name) && !hsValidPagination(q.Get(name), current) {
			return hsInvalidStreamToken
		}
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]any{"chunk": []any{}})
	return nil
}

// serveMembers is GET /rooms/{roomId}/members: at, when given, must be a sync
// or pagination token this fake issued (matrix-js-sdk sends its last
// next_batch there). The room has no members.
func (hs *Homeserver) serveMembers(w http.ResponseWriter, r *http.Request) error {
	_, current, err := hs.begin(r, hsQueriesMembers)
	if err != nil {
		return err
	}
	if q := r.URL.Query(); q.Has("at") && !hsValidPagination(q.Get("at"), current) {
		return hsInvalidStreamToken
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]any{"chunk": []any{}})
	return nil
}
