package fakes

import (
	"crypto/ed25519"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/internal/sydent"
	"github.com/threepidd/threepidd/mxerr"
)

// IdentityServerMode selects how the fake identity server answers bind and
// unbind requests. The pubkey endpoints always answer normally.
type IdentityServerMode int

const (
	// IdentityServerNormal behaves like Sydent.
	IdentityServerNormal IdentityServerMode = iota
	// IdentityServerFail500 answers 500 {"errcode":"M_UNKNOWN"}, as Sydent does
	// on an internal error.
	IdentityServerFail500
	// IdentityServerFail501Plain answers 501 with a text/plain body: an
	// identity server that does not implement the endpoint.
	IdentityServerFail501Plain
	// IdentityServerMatrixForbidden answers 403 {"errcode":"M_FORBIDDEN"}.
	IdentityServerMatrixForbidden
	// IdentityServerUnauthorized401 answers 401 {"errcode":"M_UNKNOWN_TOKEN"}.
	IdentityServerUnauthorized401
	// IdentityServerHang never answers: the request blocks until the client
	// gives up or the server stops, and the connection is then dropped.
	IdentityServerHang
	// IdentityServerBadSignature binds, then answers an association signed by
	// a key that is not the server's.
	IdentityServerBadSignature
	// IdentityServerNoSignature binds, then answers an unsigned association.
	IdentityServerNoSignature
	// IdentityServerWrongMXID binds, then answers a signed association naming
	// another user.
	IdentityServerWrongMXID
	// IdentityServerExpired binds, then answers a signed association whose
	// validity ended a day ago.
	IdentityServerExpired
)

// String names the mode, for test names and logs.
func (m IdentityServerMode) String() string {
	names := [...]string{"normal", "fail-500", "fail-501-plain", "matrix-forbidden", "unauthorized-401",
		"hang", "bad-signature", "no-signature", "wrong-mxid", "expired"}
	if int(m) >= 0 && int(m) < len(names) {
		return names[m]
	}
	return fmt.Sprintf("IdentityServerMode(%d)", int(m))
}

// IdentityServerUnbindCall is one unbind request the fake received.
type IdentityServerUnbindCall struct {
	// Origin is the X-Matrix origin ("" when there was no usable header).
	Origin string
	// MXID, Medium and Address are from the body ("" when absent).
	MXID, Medium, Address string
	// Verified is true when the request passed Sydent's checks: a signature by
	// a trusted key of Origin over {method, uri, origin, destination_is,
	// content}, and an mxid on Origin.
	Verified bool
	// Status is the HTTP status answered (0 when the request hung).
	Status int
	// Reason says why the request was refused ("" when it was not).
	Reason string
}

// IdentityServer is a fake identity server that behaves like Sydent for the
// calls a homeserver makes: pubkey, bind and unbind. It listens on 127.0.0.1
// with an OS-chosen port and can be stopped and restarted on the same port.
type IdentityServer struct {
	t        testing.TB
	name     string
	key      *signingkey.Key
	wrongKey *signingkey.Key
	handler  http.Handler

	// tls makes the server answer HTTPS (NewIdentityServerTLS).
	tls bool

	mu   sync.Mutex
	srv  *httptest.Server
	addr string
	// connections counts the TCP connections accepted, across restarts.
	connections int
	stopping    chan struct{}
	closed      bool
	mode        IdentityServerMode
	nextSID     int
	sessions    map[string]isSession
	bindings    map[string]isBinding
	hsKeys      map[string]map[string]ed25519.PublicKey
	bindCalls   int
	// validatedCalls counts getValidated3pid requests.
	validatedCalls int
	unbindCalls    []IdentityServerUnbindCall
	// requestIDs are the X-Request-ID headers of every request, in order.
	requestIDs []string
}

// isSession is a validated 3PID session.
type isSession struct {
	medium, address, clientSecret, accessToken string
}

// isBinding is a stored association of an address.
type isBinding struct {
	medium, mxid string
}

// NewIdentityServer starts a fake identity server whose signing name and
// server_name are name, with a fresh ed25519 key "ed25519:0" (Sydent's key
// ID). It is closed when the test ends.
func NewIdentityServer(t testing.TB, name string) *IdentityServer {
	t.Helper()
	is := newIdentityServer(t, name)
	is.Start()
	t.Cleanup(is.Close)
	return is
}

// NewIdentityServerTLS starts a fake identity server that answers HTTPS with
// httptest's certificate (for 127.0.0.1, see CertificatePEM), as an identity
// server a client names is reached: https://<id_server>. Its name (its
// id_server and signing name) is its host:port, 127.0.0.1:<port>.
func NewIdentityServerTLS(t testing.TB) *IdentityServer {
	t.Helper()
	is := newIdentityServer(t, "")
	is.tls = true
	is.Start()
	is.name = is.addr
	t.Cleanup(is.Close)
	return is
}

func newIdentityServer(t testing.TB, name string) *IdentityServer {
	t.Helper()
	key, err := signingkey.Generate("0")
	if err != nil {
		t.Fatalf("fake identity server %s: %v", name, err)
	}
	wrongKey, err := signingkey.Generate("0")
	if err != nil {
		t.Fatalf("fake identity server %s: %v", name, err)
	}
	is := &IdentityServer{
		t:        t,
		name:     name,
		key:      key,
		wrongKey: wrongKey,
		sessions: make(map[string]isSession),
		bindings: make(map[string]isBinding),
		hsKeys:   make(map[string]map[string]ed25519.PublicKey),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/identity/v2/pubkey/isvalid", is.serveIsValid)
	mux.HandleFunc("GET /_matrix/identity/v2/pubkey/{keyId}", is.servePubkey)
	mux.HandleFunc("POST /_matrix/identity/v2/3pid/bind", is.serveBind)
	mux.HandleFunc("GET /_matrix/identity/v2/3pid/getValidated3pid", is.serveValidated)
	mux.HandleFunc("POST /_matrix/identity/v2/3pid/unbind", is.serveUnbind)
	is.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		is.requestIDs = append(is.requestIDs, r.Header.Get("X-Request-ID"))
		is.mu.Unlock()
		mux.ServeHTTP(w, r)
	})
	return is
}

// URL is the server's base URL (http://127.0.0.1:port, or https:// for
// NewIdentityServerTLS); it stays the same across Stop and Start.
func (is *IdentityServer) URL() string {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.tls {
		return "https://" + is.addr
	}
	return "http://" + is.addr
}

// CertificatePEM is the PEM of the certificate a NewIdentityServerTLS server
// answers with (self-signed, for 127.0.0.1 and ::1): a root to trust.
func (is *IdentityServer) CertificatePEM() []byte {
	is.mu.Lock()
	defer is.mu.Unlock()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: is.srv.Certificate().Raw})
}

// Connections is how many TCP connections the server accepted so far (across
// restarts): 0 proves nothing ever reached it.
func (is *IdentityServer) Connections() int {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.connections
}

func (is *IdentityServer) connState(_ net.Conn, state http.ConnState) {
	if state == http.StateNew {
		is.mu.Lock()
		is.connections++
		is.mu.Unlock()
	}
}

// Name is the server's name: its server_name and the name it signs with.
func (is *IdentityServer) Name() string { return is.name }

// KeyID is the ID of the server's signing key ("ed25519:0").
func (is *IdentityServer) KeyID() string { return string(is.Key().ID) }

// PublicKeyBase64 is the server's public key in unpadded base64.
func (is *IdentityServer) PublicKeyBase64() string { return is.Key().PublicBase64() }

// Key is the server's signing key, e.g. to sign an onupdate request from it.
func (is *IdentityServer) Key() *signingkey.Key {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.key
}

// RotateKey replaces the server's signing key by a new one with key ID
// "ed25519:"+id, as an identity server rotating its key: the pubkey endpoint
// serves the new key only, and associations are signed with it. It returns
// the new key.
func (is *IdentityServer) RotateKey(id string) *signingkey.Key {
	is.t.Helper()
	key, err := signingkey.Generate(id)
	if err != nil {
		is.t.Fatalf("fake identity server %s: %v", is.name, err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.key = key
	return key
}

// Config is the identity_servers entry for this server: server_name is Name,
// base_url is URL, no pinned keys.
func (is *IdentityServer) Config(onupdate bool) config.IdentityServer {
	return config.IdentityServer{ServerName: is.name, BaseURL: is.URL(), OnUpdate: onupdate}
}

// SetMode changes how bind and unbind are answered from the next request on.
func (is *IdentityServer) SetMode(mode IdentityServerMode) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.mode = mode
}

// TrustHomeserver makes the server accept unbind requests from serverName
// signed with keyID/pub, as if it had fetched the homeserver's keys.
func (is *IdentityServer) TrustHomeserver(serverName, keyID string, pub ed25519.PublicKey) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.hsKeys[serverName] == nil {
		is.hsKeys[serverName] = make(map[string]ed25519.PublicKey)
	}
	is.hsKeys[serverName][keyID] = pub
}

// AddValidatedSession creates a session in which medium/address has been
// validated with clientSecret, and whose bind must carry accessToken as its
// Bearer token. It returns the session ID.
func (is *IdentityServer) AddValidatedSession(medium, address, clientSecret, accessToken string) (sid string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.nextSID++
	sid = strconv.Itoa(is.nextSID)
	is.sessions[sid] = isSession{medium: medium, address: address, clientSecret: clientSecret, accessToken: accessToken}
	return sid
}

// Bindings returns the current bindings, address → mxid.
func (is *IdentityServer) Bindings() map[string]string {
	is.mu.Lock()
	defer is.mu.Unlock()
	out := make(map[string]string, len(is.bindings))
	for addr, b := range is.bindings {
		out[addr] = b.mxid
	}
	return out
}

// BindCalls is the number of bind requests received, whatever their answer.
func (is *IdentityServer) BindCalls() int {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.bindCalls
}

// UnbindCalls returns the unbind requests received, oldest first. A request
// still being handled (e.g. hanging) is listed with Status 0.
func (is *IdentityServer) UnbindCalls() []IdentityServerUnbindCall {
	is.mu.Lock()
	defer is.mu.Unlock()
	return append([]IdentityServerUnbindCall(nil), is.unbindCalls...)
}

// Start (re)starts the server, on the same address as before if it ran
// already. It fails the test if that address cannot be listened on again.
func (is *IdentityServer) Start() {
	is.t.Helper()
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.closed {
		is.t.Fatalf("fake identity server %s: Start after Close", is.name)
	}
	if is.srv != nil {
		return
	}
	srv := httptest.NewUnstartedServer(is.handler)
	srv.Config.ConnState = is.connState
	if is.addr != "" {
		_ = srv.Listener.Close()
		ln, err := net.Listen("tcp", is.addr)
		if err != nil {
			is.t.Fatalf("fake identity server %s: listen again on %s: %v", is.name, is.addr, err)
		}
		srv.Listener = ln
	}
	if is.tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	is.srv = srv
	is.addr = srv.Listener.Addr().String()
	is.stopping = make(chan struct{})
}

// Stop shuts the server down: new connections are refused until Start, and
// hanging requests are dropped. It returns once no request is being handled.
func (is *IdentityServer) Stop() {
	is.mu.Lock()
	srv, stopping := is.srv, is.stopping
	is.srv = nil
	is.mu.Unlock()
	if srv == nil {
		return
	}
	close(stopping)
	srv.Close()
}

// Close stops the server for good; NewIdentityServer registers it with
// t.Cleanup.
func (is *IdentityServer) Close() {
	is.Stop()
	is.mu.Lock()
	defer is.mu.Unlock()
	is.closed = true
}

func (is *IdentityServer) servePubkey(w http.ResponseWriter, r *http.Request) {
	sydent.ServePubkey(w, r, is.Key())
}

func (is *IdentityServer) serveIsValid(w http.ResponseWriter, r *http.Request) {
	pub := r.URL.Query().Get("public_key")
	if pub == "" {
		isWriteError(w, http.StatusBadRequest, "M_MISSING_PARAMS", "Missing parameters: public_key")
		return
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]bool{"valid": pub == is.PublicKeyBase64()})
}

// fault answers r as the current fault mode asks, reporting whether it did.
// It returns the status answered (0 for a hang that ended).
func (is *IdentityServer) fault(w http.ResponseWriter, r *http.Request, mode IdentityServerMode, stopping <-chan struct{}) (status int, handled bool) {
	switch mode {
	case IdentityServerFail500:
		isWriteError(w, http.StatusInternalServerError, "M_UNKNOWN", "Internal Server Error")
		return http.StatusInternalServerError, true
	case IdentityServerFail501Plain:
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusNotImplemented)
		_, _ = io.WriteString(w, "Not Implemented")
		return http.StatusNotImplemented, true
	case IdentityServerMatrixForbidden:
		isWriteError(w, http.StatusForbidden, "M_FORBIDDEN", "This request is forbidden")
		return http.StatusForbidden, true
	case IdentityServerUnauthorized401:
		isWriteError(w, http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Unrecognised access token")
		return http.StatusUnauthorized, true
	case IdentityServerHang:
		select {
		case <-r.Context().Done():
		case <-stopping:
		}
		return 0, true
	}
	return 0, false
}

// state returns the mode and the stop channel for one request.
func (is *IdentityServer) state() (IdentityServerMode, <-chan struct{}) {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.mode, is.stopping
}

// isAbortIfHung drops the connection of a request that hung, so the client
// sees no answer rather than an empty 200.
func isAbortIfHung(status int) {
	if status == 0 {
		panic(http.ErrAbortHandler)
	}
}

// serveBind is Sydent's v2 ThreePidBindServlet: Bearer token, then
// {sid, client_secret, mxid}, then the validated session; it stores the
// binding (replacing any other for the address) and answers the signed
// association.
// serveValidated answers GET /3pid/getValidated3pid as Sydent does: the
// session's medium and address for its access token, 404 M_NO_VALID_SESSION
// for an unknown session or wrong secret. Faults do not apply (it is a read).
func (is *IdentityServer) serveValidated(w http.ResponseWriter, r *http.Request) {
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	q := r.URL.Query()
	is.mu.Lock()
	is.validatedCalls++
	s, found := is.sessions[q.Get("sid")]
	is.mu.Unlock()
	switch {
	case token == "" || (found && s.accessToken != token):
		isWriteError(w, http.StatusUnauthorized, "M_UNAUTHORIZED", "Unauthorized")
	case !found || s.clientSecret != q.Get("client_secret"):
		isWriteError(w, http.StatusNotFound, "M_NO_VALID_SESSION", "No valid session was found matching that sid and client secret")
	default:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"medium": s.medium, "address": s.address, "validated_at": time.Now().UnixMilli()})
	}
}

// RequestIDs lists the X-Request-ID header of every request received, in
// order ("" for none).
func (is *IdentityServer) RequestIDs() []string {
	is.mu.Lock()
	defer is.mu.Unlock()
	return slices.Clone(is.requestIDs)
}

// ValidatedCalls returns how many getValidated3pid calls were made.
func (is *IdentityServer) ValidatedCalls() int {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.validatedCalls
}

func (is *IdentityServer) serveBind(w http.ResponseWriter, r *http.Request) {
	mode, stopping := is.state()
	is.mu.Lock()
	is.bindCalls++
	is.mu.Unlock()
	if status, ok := is.fault(w, r, mode, stopping); ok {
		isAbortIfHung(status)
		return
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		token = r.URL.Query().Get("access_token")
	}
	if token == "" {
		isWriteError(w, http.StatusUnauthorized, "M_UNAUTHORIZED", "Unauthorized")
		return
	}
	req, err := sydent.ReadBindRequest(r)
	if err != nil {
		isWriteError(w, http.StatusBadRequest, "M_BAD_JSON", "Malformed JSON")
		return
	}
	if req.SID == "" || req.ClientSecret == "" || req.MXID == "" {
		isWriteError(w, http.StatusBadRequest, "M_MISSING_PARAMS", "Missing parameters: sid, client_secret and mxid are required")
		return
	}
	is.mu.Lock()
	s, found := is.sessions[req.SID]
	if !found || s.clientSecret != req.ClientSecret {
		is.mu.Unlock()
		isWriteError(w, http.StatusNotFound, "M_NO_VALID_SESSION", "No valid session was found matching that sid and client secret")
		return
	}
	if s.accessToken != token {
		is.mu.Unlock()
		isWriteError(w, http.StatusUnauthorized, "M_UNAUTHORIZED", "Unauthorized")
		return
	}
	is.bindings[s.address] = isBinding{medium: s.medium, mxid: req.MXID}
	is.mu.Unlock()

	body, err := is.association(mode, s.medium, s.address, req.MXID)
	if err != nil {
		isWriteError(w, http.StatusInternalServerError, "M_UNKNOWN", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// association builds the signed association Sydent answers a bind with,
// spoilt as mode asks.
func (is *IdentityServer) association(mode IdentityServerMode, medium, address, mxid string) ([]byte, error) {
	a := sydent.NewAssociation(medium, address, mxid, time.Now())
	switch mode {
	case IdentityServerWrongMXID:
		a.MXID = "@someone-else:" + is.name
	case IdentityServerExpired:
		a.NotBefore, a.NotAfter = a.TS.Add(-48*time.Hour), a.TS.Add(-24*time.Hour)
	case IdentityServerNoSignature:
		return a.JSON()
	case IdentityServerBadSignature:
		return a.Sign(is.name, is.wrongKey)
	}
	return a.Sign(is.name, is.Key())
}

// serveUnbind is Sydent's ThreePidUnbindServlet for homeserver-signed
// requests: body checks, then the X-Matrix signature as Sydent's verifier.py
// checks it, then the mxid's server, then the idempotent removal (200 {} even
// when there was no such binding).
func (is *IdentityServer) serveUnbind(w http.ResponseWriter, r *http.Request) {
	mode, stopping := is.state()
	// The call is listed on arrival (so a hanging one shows) and completed
	// when answered.
	var call IdentityServerUnbindCall
	is.mu.Lock()
	idx := len(is.unbindCalls)
	is.unbindCalls = append(is.unbindCalls, call)
	is.mu.Unlock()
	defer func() {
		is.mu.Lock()
		is.unbindCalls[idx] = call
		is.mu.Unlock()
		isAbortIfHung(call.Status)
	}()
	body, err := io.ReadAll(io.LimitReader(r.Body, sydent.MaxBody))
	if err != nil {
		call.Status, call.Reason = http.StatusBadRequest, "read body: "+err.Error()
		isWriteError(w, call.Status, "M_BAD_JSON", "Malformed JSON")
		return
	}
	var req struct {
		MXID     *string `json:"mxid"`
		ThreePID *struct {
			Medium  *string `json:"medium"`
			Address *string `json:"address"`
		} `json:"threepid"`
	}
	jsonErr := json.Unmarshal(body, &req)
	if req.MXID != nil {
		call.MXID = *req.MXID
	}
	if req.ThreePID != nil && req.ThreePID.Medium != nil && req.ThreePID.Address != nil {
		call.Medium, call.Address = *req.ThreePID.Medium, *req.ThreePID.Address
	}
	if status, ok := is.fault(w, r, mode, stopping); ok {
		call.Status, call.Reason = status, "fault mode"
		return
	}
	switch {
	case jsonErr != nil:
		call.Status, call.Reason = http.StatusBadRequest, "body: "+jsonErr.Error()
		isWriteError(w, call.Status, "M_BAD_JSON", "Malformed JSON")
		return
	case req.MXID == nil || req.ThreePID == nil:
		call.Status, call.Reason = http.StatusBadRequest, "missing threepid or mxid"
		isWriteError(w, call.Status, "M_MISSING_PARAMS", "Missing parameters: threepid, mxid")
		return
	case req.ThreePID.Medium == nil || req.ThreePID.Address == nil:
		call.Status, call.Reason = http.StatusBadRequest, "threepid lacks medium or address"
		isWriteError(w, call.Status, "M_MISSING_PARAMS", "Threepid lacks medium / address")
		return
	}
	origin, authErr := is.authenticate(r, body)
	call.Origin = origin
	if authErr != nil {
		call.Status, call.Reason = authErr.status, authErr.msg
		isWriteError(w, authErr.status, authErr.errcode, authErr.msg)
		return
	}
	if !strings.HasSuffix(call.MXID, ":"+origin) {
		call.Status, call.Reason = http.StatusForbidden, "mxid not on origin"
		isWriteError(w, call.Status, "M_FORBIDDEN", "Origin server name does not match mxid")
		return
	}
	call.Verified = true
	is.mu.Lock()
	if b, ok := is.bindings[call.Address]; ok && b.medium == call.Medium && b.mxid == call.MXID {
		delete(is.bindings, call.Address)
	}
	is.mu.Unlock()
	call.Status = http.StatusOK
	mxerr.WriteJSON(w, http.StatusOK, map[string]any{})
}

// isAuthError is a refused unbind authentication with Sydent's answer.
type isAuthError struct {
	status       int
	errcode, msg string
}

// isServerNameRE approximates Sydent's is_valid_matrix_server_name: a host name
// or IP literal with an optional port.
var isServerNameRE = regexp.MustCompile(`^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$`)

// authenticate is Sydent's Verifier.authenticate_request: it collects the
// signatures of every X-Matrix Authorization header, rebuilds the signed
// object {method, uri, origin, destination_is: our name, content,
// signatures} and checks it with the origin's keys. It returns the origin.
func (is *IdentityServer) authenticate(r *http.Request, body []byte) (string, *isAuthError) {
	headers := r.Header.Values("Authorization")
	if len(headers) == 0 {
		return "", &isAuthError{http.StatusUnauthorized, "M_FORBIDDEN", "Missing Authorization headers"}
	}
	var origin string
	var sigs []isSig
	for _, h := range headers {
		if !strings.HasPrefix(h, "X-Matrix") {
			continue
		}
		o, key, sig, ok := isParseXMatrix(h)
		if !ok {
			return "", &isAuthError{http.StatusUnauthorized, "M_FORBIDDEN", "Malformed Authorization header"}
		}
		origin = o
		sigs = append(sigs, isSig{origin: o, key: key, sig: sig})
	}
	if sigs == nil {
		return "", &isAuthError{http.StatusUnauthorized, "M_FORBIDDEN", "Missing X-Matrix Authorization header"}
	}
	if !isServerNameRE.MatchString(origin) {
		return origin, &isAuthError{http.StatusBadRequest, "M_INVALID_PARAM", "X-Matrix header's origin parameter must be a valid Matrix server name"}
	}
	is.mu.Lock()
	keys, known := is.hsKeys[origin]
	is.mu.Unlock()
	if !known {
		// Sydent could not fetch the origin's /_matrix/key/v2/server.
		return origin, &isAuthError{http.StatusInternalServerError, "M_UNKNOWN", "Unable to contact the Matrix homeserver to authenticate request (ConnectError)"}
	}
	signatures := map[string]map[string]string{}
	for _, s := range sigs {
		if signatures[s.origin] == nil {
			signatures[s.origin] = map[string]string{}
		}
		signatures[s.origin][s.key] = s.sig
	}
	signed, err := json.Marshal(map[string]any{
		"method":         r.Method,
		"uri":            r.RequestURI,
		"origin":         origin,
		"destination_is": is.name,
		"content":        json.RawMessage(body),
		"signatures":     signatures,
	})
	if err != nil {
		return origin, &isAuthError{http.StatusInternalServerError, "M_UNKNOWN", "Internal Server Error"}
	}
	// Like verifyServerSignedJson: the first of origin's signatures whose key
	// is known decides.
	for _, s := range sigs {
		if s.origin != origin {
			continue
		}
		pub, ok := keys[s.key]
		if !ok {
			continue
		}
		if err := gomatrixserverlib.VerifyJSON(origin, gomatrixserverlib.KeyID(s.key), pub, signed); err != nil {
			return origin, &isAuthError{http.StatusUnauthorized, "M_FORBIDDEN", "Unable to verify signature for " + origin}
		}
		return origin, nil
	}
	return origin, &isAuthError{http.StatusUnauthorized, "M_FORBIDDEN", "No matching signature found"}
}

// isSig is one X-Matrix signature.
type isSig struct {
	origin, key, sig string
}

// isParseXMatrix parses an X-Matrix header exactly as Sydent's
// parse_auth_header does: split on the first spaces, then on commas, then on
// the first '='; a value starting with a quote loses its first and last
// characters; no escapes. Spaces after commas therefore break it, as they
// break Sydent. ok is false for a malformed header.
func isParseXMatrix(h string) (origin, key, sig string, ok bool) {
	parts := strings.Split(h, " ")
	if len(parts) < 2 {
		return "", "", "", false
	}
	params := map[string]string{}
	for _, kv := range strings.Split(parts[1], ",") {
		k, v, found := strings.Cut(kv, "=")
		if !found {
			return "", "", "", false
		}
		params[k] = v
	}
	var vals [3]string
	for i, name := range []string{"origin", "key", "sig"} {
		v, found := params[name]
		if !found {
			return "", "", "", false
		}
		if strings.HasPrefix(v, `"`) {
			v = v[1:max(1, len(v)-1)]
		}
		vals[i] = v
	}
	return vals[0], vals[1], vals[2], true
}

// isWriteError writes a Matrix error body.
func isWriteError(w http.ResponseWriter, status int, errcode, msg string) {
	mxerr.WriteJSON(w, status, map[string]string{"errcode": errcode, "error": msg})
}
