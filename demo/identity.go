package demo

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/internal/sydent"
	"github.com/threepidd/threepidd/mxerr"
)

// identityServer stands in for a Sydent: the calls threepidd makes to it
// (pubkey, getValidated3pid, bind, unbind) and the sessions in which users
// validated their addresses.
type identityServer struct {
	p    *printer
	name string
	key  *signingkey.Key

	mu       sync.Mutex
	sessions map[string]isSession
}

// isSession is an address validated on the identity server, for the holder of
// its access token.
type isSession struct {
	medium, address, clientSecret, accessToken string
}

func newIdentityServer(p *printer, name string) (*identityServer, error) {
	key, err := signingkey.Generate("0")
	if err != nil {
		return nil, fmt.Errorf("identity server key: %w", err)
	}
	return &identityServer{p: p, name: name, key: key, sessions: map[string]isSession{}}, nil
}

func (is *identityServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/identity/v2/pubkey/{keyId}", is.pubkey)
	mux.HandleFunc("GET /_matrix/identity/v2/3pid/getValidated3pid", is.validated)
	mux.HandleFunc("POST /_matrix/identity/v2/3pid/bind", is.bind)
	mux.HandleFunc("POST /_matrix/identity/v2/3pid/unbind", is.unbind)
	return mux
}

// addSession records that address was validated in a new session and returns its sid.
func (is *identityServer) addSession(s isSession) string {
	is.mu.Lock()
	defer is.mu.Unlock()
	sid := strconv.Itoa(len(is.sessions) + 1)
	is.sessions[sid] = s
	return sid
}

// lookup finds the session of sid for clientSecret and the request's bearer token.
func (is *identityServer) lookup(r *http.Request, sid, clientSecret string) (isSession, bool) {
	is.mu.Lock()
	defer is.mu.Unlock()
	s, ok := is.sessions[sid]
	return s, ok && s.clientSecret == clientSecret && r.Header.Get("Authorization") == "Bearer "+s.accessToken
}

func (is *identityServer) pubkey(w http.ResponseWriter, r *http.Request) {
	if sydent.ServePubkey(w, r, is.key) {
		is.p.note("identity server", "threepidd fetched public key %s", is.key.ID)
	}
}

func (is *identityServer) validated(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s, ok := is.lookup(r, q.Get("sid"), q.Get("client_secret"))
	if !ok {
		writeError(w, http.StatusNotFound, "M_NO_VALID_SESSION", "No valid session was found matching that sid and client secret")
		return
	}
	is.p.note("identity server", "threepidd asked which address session %s validated → %s", q.Get("sid"), s.address)
	mxerr.WriteJSON(w, http.StatusOK, map[string]any{"medium": s.medium, "address": s.address, "validated_at": time.Now().UnixMilli()})
}

// bind stores nothing (the story does not need it) and answers the signed
// association, as Sydent does.
func (is *identityServer) bind(w http.ResponseWriter, r *http.Request) {
	req, err := sydent.ReadBindRequest(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "M_BAD_JSON", "Malformed JSON")
		return
	}
	s, ok := is.lookup(r, req.SID, req.ClientSecret)
	if !ok {
		writeError(w, http.StatusNotFound, "M_NO_VALID_SESSION", "No valid session was found matching that sid and client secret")
		return
	}
	raw, err := sydent.NewAssociation(s.medium, s.address, req.MXID, time.Now()).Sign(is.name, is.key)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "M_UNKNOWN", "Internal Server Error")
		return
	}
	is.p.note("identity server", "bound %s to %s, answered the association signed as %s", s.address, req.MXID, is.name)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(raw)
}

// unbind accepts every unbind (a real identity server checks the
// homeserver's signature): the story does not unbind, curl may.
func (is *identityServer) unbind(w http.ResponseWriter, _ *http.Request) {
	is.p.note("identity server", "unbind from threepidd accepted")
	mxerr.WriteJSON(w, http.StatusOK, struct{}{})
}
