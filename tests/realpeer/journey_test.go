//go:build realpeer

package realpeer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/account"
	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/metrics"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/storage/storagetest"
	tpsync "github.com/threepidd/threepidd/sync"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/support"
)

const (
	// identitySigningName is the fake identity server's signing name; clients
	// call it by its host:port (its id_server), as with a real Sydent whose
	// server_name differs from the host clients use.
	identitySigningName = "id.test"
	// newOwner is the remote user who takes the journey's address over on
	// the identity server.
	newOwner = "@mallory:elsewhere.example"
	// controlWait bounds how long a control request waits for the event it
	// is about (a mail, a parked long-poll).
	controlWait = 30 * time.Second
	// waitingLongPolls is threepidd's gauge of parked long-polling syncs.
	waitingLongPolls = metrics.Namespace + "_sync_waiting_long_polls"
	// journeyMessage is the room message journey.mjs sends (MESSAGE_TEXT).
	journeyMessage = "threepidd journey: room messages keep coming"
	// journeyPhoneCountry and journeyPhoneNumber are the phone number the
	// journey adds, as a user enters it (a UK number reserved for drama).
	journeyPhoneCountry = "GB"
	journeyPhoneNumber  = "07700 900123"
	// journeyMSISDN is that number's 3PID address: E.164 digits without "+".
	journeyMSISDN = "447700900123"
	// journeyIntlFmt is its international format, which Synapse answers
	// requestToken with (as intl_fmt, next to msisdn).
	journeyIntlFmt = "+44 7700 900123"
)

// journeySteps are journey.mjs's steps, in order.
var journeySteps = []string{
	"login", "whoami", "getThreePids", "requestAdd3pidEmailToken", "resendAdd3pidEmailToken", "readMail", "openLink",
	"addThreePidOnly", "afterAdd", "getThreePidsAfterAdd", "bindThreePid", "createRoom",
	"initialSync", "syncTakeover", "syncMessage", "unbindThreePid", "deleteThreePid",
	"getThreePidsAfterDelete",
	"requestAdd3pidMsisdnToken", "readSMS", "submitMsisdnTokenWrongCode", "submitMsisdnTokenOtherUrl",
	"addThreePidOnlyMsisdn", "getThreePidsAfterMsisdnAdd", "deleteThreePidMsisdn", "getThreePidsAfterMsisdnDelete",
}

// TestJourney runs a user's whole 3PID journey with matrix-js-sdk
// (js/journey.mjs) through nginx (deploy/nginx/threepidd.conf) against
// threepidd in front of a real Dendrite, on each storage backend of threepidd:
// Dendrite checks the access tokens and the password of the UIA relay, the
// validation mail goes to an SMTP sink, the bind to a fake identity server,
// which then sends a signed takeover onupdate through nginx while the client
// long-polls /sync through threepidd's proxy; then a phone number is added
// and deleted as Element does it, its code read from an SMS webhook sink.
func TestJourney(t *testing.T) {
	ctx := ContextOf(t)
	d := StartDendrite(ctx, t, env)
	for _, b := range storagetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			start := time.Now()
			testJourney(ContextOf(t), t, d, b)
			t.Logf("journey on %s: %v wall (threepidd, nginx and fakes started, js-sdk journey, checks)", b.Name, time.Since(start).Round(time.Millisecond))
		})
	}
}

func testJourney(ctx context.Context, t *testing.T, d *Dendrite, b storagetest.Backend) {
	localpart := "alice-" + b.Name
	alice := mustRegister(ctx, t, d, localpart, localpart+"-password")
	email := localpart + "@example.org"
	devicesBefore := deviceIDs(ctx, t, d, alice.AccessToken)

	sink := fakes.NewSMTPSink(t)
	smsSink := fakes.NewSMSSink(t)
	is := fakes.NewIdentityServer(t, identitySigningName)
	hsKey, err := signingkey.Load(d.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	is.TrustHomeserver(d.ServerName, string(hsKey.ID), hsKey.PublicKey())
	idServer := strings.TrimPrefix(is.URL(), "http://")

	addr := ReserveAddr(t)
	n := StartNginx(ctx, t, env, addr, d.Addr)
	StartThreepidd(ctx, t, ThreepiddOptions{
		Backend: b, Dendrite: d, Addr: addr, PublicBaseURL: n.URL, SMTPPort: sink.Port(), SMSWebhookURL: smsSink.URL(),
		IdentityServers: []config.IdentityServer{{ServerName: idServer, SigningName: is.Name(), BaseURL: is.URL(), OnUpdate: true}},
	})
	ctl := &journeyControl{sink: sink, sms: smsSink, is: is, email: email, msisdn: journeyMSISDN, homeserver: d.ServerName, nginxURL: n.URL}
	ctlSrv := httptest.NewServer(ctl.handler())
	t.Cleanup(ctlSrv.Close)

	results := runSteps(ctx, t, env, JourneyOptions{
		BaseURL: n.URL, User: localpart, Password: alice.Password, Email: email,
		PhoneCountry: journeyPhoneCountry, PhoneNumber: journeyPhoneNumber,
		IdentityServerURL: is.URL(), ControlURL: ctlSrv.URL,
	}, journeySteps)
	decode := func(step string, v any) {
		t.Helper()
		results.decode(t, step, v)
	}

	var login struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
	}
	decode("login", &login)
	if login.UserID != alice.UserID || login.DeviceID == "" || slices.Contains(devicesBefore, login.DeviceID) {
		t.Errorf("login %+v, want %s on a new device", login, alice.UserID)
	}
	for _, step := range []string{"getThreePids", "getThreePidsAfterDelete", "getThreePidsAfterMsisdnDelete"} {
		if got := string(results[step]); got != `{"threepids":[]}` {
			t.Errorf("%s: %s, want {\"threepids\":[]}", step, got)
		}
	}

	// Validation: the link in the mail leads through nginx to threepidd.
	var token struct {
		SID string `json:"sid"`
	}
	decode("requestAdd3pidEmailToken", &token)
	var mail struct {
		Link string `json:"link"`
	}
	decode("readMail", &mail)
	link, err := url.Parse(mail.Link)
	if err != nil {
		t.Fatalf("mail link %q: %v", mail.Link, err)
	}
	if token.SID == "" || link.Query().Get("sid") != token.SID || !strings.HasPrefix(mail.Link, n.URL+account.EmailSubmitPath+"?") {
		t.Errorf("mail link %q, want %s%s with sid %q", mail.Link, n.URL, account.EmailSubmitPath, token.SID)
	}
	// Element's resend: a second mail, with another link; the journey
	// validated with the first.
	var links []string
	for _, m := range sink.Mails() {
		if slices.ContainsFunc(m.To, func(rcpt string) bool { return strings.EqualFold(rcpt, email) }) {
			links = append(links, m.FirstLink())
		}
	}
	if len(links) != 2 || links[0] != mail.Link || links[1] == links[0] {
		t.Errorf("mails to %s carry links %q; want two different ones, the journey's first", email, links)
	}
	var opened struct {
		PageStatus int    `json:"page_status"`
		CSP        string `json:"csp"`
		Form       struct {
			Method string   `json:"method"`
			Action string   `json:"action"`
			Fields []string `json:"fields"`
		} `json:"form"`
		Status int `json:"status"`
	}
	decode("openLink", &opened)
	if opened.PageStatus != http.StatusOK || opened.Status != http.StatusOK || !strings.Contains(opened.CSP, "form-action 'self'") ||
		opened.Form.Method != http.MethodPost || opened.Form.Action != n.URL+account.EmailSubmitPath ||
		!slices.Equal(opened.Form.Fields, []string{"client_secret", "sid", "token"}) {
		t.Errorf("the validation link: %+v; want a page (200) whose form POSTs sid, client_secret and token to %s, then 200", opened, n.URL+account.EmailSubmitPath)
	}

	// /3pid/add through UIA, relayed to Dendrite's password check.
	results.checkUIAAdd(t, "addThreePidOnly")
	var afterAdd struct {
		Whoami struct {
			UserID   string `json:"user_id"`
			DeviceID string `json:"device_id"`
		} `json:"whoami"`
		DeviceIDs []string `json:"device_ids"`
	}
	decode("afterAdd", &afterAdd)
	wantDevices := append(slices.Clone(devicesBefore), login.DeviceID)
	slices.Sort(wantDevices)
	if afterAdd.Whoami.UserID != alice.UserID || afterAdd.Whoami.DeviceID != login.DeviceID || !slices.Equal(afterAdd.DeviceIDs, wantDevices) {
		t.Errorf("after the UIA relay: %+v, want %s on %s with devices %v", afterAdd, alice.UserID, login.DeviceID, wantDevices)
	}
	results.checkListedOnly(t, "getThreePidsAfterAdd", "email", email)

	// Bind, then the takeover reaches the parked long-poll.
	if got := string(results["bindThreePid"]); got != `{}` {
		t.Errorf("bindThreePid answered %s, want {}", got)
	}
	var initial struct {
		NextBatch string          `json:"next_batch"`
		Threepids json.RawMessage `json:"threepids"`
		Joined    []string        `json:"joined"`
	}
	decode("initialSync", &initial)
	var room struct {
		RoomID string `json:"room_id"`
	}
	decode("createRoom", &room)
	if string(initial.Threepids) != "null" || !slices.Contains(initial.Joined, room.RoomID) {
		t.Errorf("initial sync: threepids %s, joined %v; want no section and room %s", initial.Threepids, initial.Joined, room.RoomID)
	}
	var takeover struct {
		Since     string         `json:"since"`
		NextBatch string         `json:"next_batch"`
		Threepids tpsync.Section `json:"threepids"`
		NewOwner  string         `json:"new_owner"`
		Replaced  string         `json:"replaced"`
		ElapsedMS int64          `json:"elapsed_ms"`
	}
	decode("syncTakeover", &takeover)
	// The bind went through threepidd to the identity server as alice.
	if takeover.Replaced != alice.UserID || takeover.NewOwner != newOwner {
		t.Errorf("takeover replaced the identity server's binding to %q with %q, want %s by %s", takeover.Replaced, takeover.NewOwner, alice.UserID, newOwner)
	}
	wantSection := tpsync.Section{email: {Deleted: false, MXID: newOwner, Medium: "email"}}
	if !reflect.DeepEqual(takeover.Threepids, wantSection) {
		t.Errorf("sync after the takeover: %s, want threepids %+v", results["syncTakeover"], wantSection)
	}
	since, err := tpsync.ParseToken(takeover.Since)
	if err != nil {
		t.Fatalf("since %q: %v", takeover.Since, err)
	}
	next, err := tpsync.ParseToken(takeover.NextBatch)
	if err != nil {
		t.Fatalf("next_batch %q: %v", takeover.NextBatch, err)
	}
	// The wake-up answers before Dendrite did: its part of the token stays,
	// so the room traffic of that time comes with the next sync.
	if next.Upstream != since.Upstream || next.Pos <= since.Pos {
		t.Errorf("takeover sync token %+v after %+v: want the same upstream token and a later position", next, since)
	}
	if takeover.ElapsedMS > 20_000 {
		t.Errorf("the long-poll took %d ms to return the section, want it woken (timeout 30 s)", takeover.ElapsedMS)
	}
	var message struct {
		Body   string `json:"body"`
		Rounds []struct {
			Threepids json.RawMessage `json:"threepids"`
		} `json:"rounds"`
	}
	decode("syncMessage", &message)
	if message.Body != journeyMessage {
		t.Errorf("room message %q, want %q", message.Body, journeyMessage)
	}
	for i, r := range message.Rounds {
		if string(r.Threepids) != "null" {
			t.Errorf("sync %d after the takeover repeats the section: %s", i+1, r.Threepids)
		}
	}

	// Unbind and delete.
	var unbind, del struct {
		Result string `json:"id_server_unbind_result"`
	}
	decode("unbindThreePid", &unbind)
	decode("deleteThreePid", &del)
	// The unbind names the identity server, which is called although the
	// takeover dropped the binding record; the delete finds none left.
	if unbind.Result != "success" || del.Result != "no-support" {
		t.Errorf("unbind %q, delete %q; want success, no-support", unbind.Result, del.Result)
	}
	calls := is.UnbindCalls()
	// One call: the phone number's delete (below) has no binding to remove.
	if len(calls) != 1 || !calls[0].Verified || calls[0].Origin != d.ServerName || calls[0].MXID != alice.UserID || calls[0].Address != email {
		t.Errorf("identity server unbind calls %+v, want one verified from %s for %s", calls, d.ServerName, alice.UserID)
	}
	if got := is.Bindings()[email]; got != newOwner {
		t.Errorf("identity server binds %s to %q, want %s's binding untouched", email, got, newOwner)
	}

	// The phone number, added and deleted as Element does it.
	checkMSISDNSteps(t, results, n.URL)

	// The registration device survives too, seen from Dendrite directly.
	var who map[string]any
	if err := DoJSON(ctx, d.URL, http.MethodGet, "/_matrix/client/v3/account/whoami", alice.AccessToken, nil, &who); err != nil {
		t.Fatal(err)
	}
	if who["user_id"] != alice.UserID || who["device_id"] != alice.DeviceID {
		t.Errorf("whoami with the registration token: %v, want %s on %s", who, alice.UserID, alice.DeviceID)
	}
	if got := deviceIDs(ctx, t, d, alice.AccessToken); !slices.Equal(got, wantDevices) {
		t.Errorf("devices at the end %v, want %v", got, wantDevices)
	}
}

// checkMSISDNSteps checks the phone-number part of the journey, as Element
// makes it (AddThreepid.addMsisdn, haveMsisdnToken): the requestToken answer,
// the SMS, a wrong code, the right one, the add through UIA, the listing and
// the delete. nginxURL is the public base URL.
func checkMSISDNSteps(t *testing.T, results journeyResults, nginxURL string) {
	t.Helper()
	var token struct {
		SID       string `json:"sid"`
		SubmitURL string `json:"submit_url"`
		MSISDN    string `json:"msisdn"`
		IntlFmt   string `json:"intl_fmt"`
	}
	results.decode(t, "requestAdd3pidMsisdnToken", &token)
	if token.SID == "" || token.SubmitURL != nginxURL+account.MSISDNSubmitPath {
		t.Errorf("requestAdd3pidMsisdnToken answered %s, want a sid and submit_url %s%s", results["requestAdd3pidMsisdnToken"], nginxURL, account.MSISDNSubmitPath)
	}
	// matrix-js-sdk types the answer IRequestMsisdnTokenResponse; Element
	// shows "A text message has been sent to +<msisdn>" and lists the new
	// number under msisdn until the next reload.
	if token.MSISDN != journeyMSISDN || token.IntlFmt != journeyIntlFmt {
		t.Errorf("requestAdd3pidMsisdnToken answered %s, want msisdn %q and intl_fmt %q as Synapse answers (Element shows and lists the number by msisdn)",
			results["requestAdd3pidMsisdnToken"], journeyMSISDN, journeyIntlFmt)
	}
	var sms fakes.SMS
	results.decode(t, "readSMS", &sms)
	if sms.To != journeyMSISDN || len(sms.Token) < 6 || len(sms.Token) > 8 || strings.Trim(sms.Token, "0123456789") != "" || !strings.Contains(sms.Text, sms.Token) {
		t.Errorf("SMS %+v, want to %s a 6-8 digit code that its text contains", sms, journeyMSISDN)
	}
	var wrong struct {
		Code        string       `json:"code"`
		MatrixError bool         `json:"matrix_error"`
		Error       JourneyError `json:"error"`
	}
	results.decode(t, "submitMsisdnTokenWrongCode", &wrong)
	if wrong.Code == sms.Token || !wrong.MatrixError || wrong.Error.HTTPStatus != http.StatusBadRequest || wrong.Error.Errcode != "M_TOKEN_INCORRECT" {
		t.Errorf("wrong code %q: the SDK rejected with %s, want a MatrixError 400 M_TOKEN_INCORRECT (DESIGN.md, Validation)", wrong.Code, results["submitMsisdnTokenWrongCode"])
	}
	if got := string(results["submitMsisdnTokenOtherUrl"]); got != `{"success":true}` {
		t.Errorf("submitMsisdnTokenOtherUrl with the SMS's code after a wrong one answered %s, want {\"success\":true}", got)
	}
	results.checkUIAAdd(t, "addThreePidOnlyMsisdn")
	results.checkListedOnly(t, "getThreePidsAfterMsisdnAdd", "msisdn", journeyMSISDN)
	// Never bound, so no identity server is asked.
	var del struct {
		Result *string `json:"id_server_unbind_result"`
	}
	results.decode(t, "deleteThreePidMsisdn", &del)
	if del.Result == nil || *del.Result != "no-support" {
		t.Errorf("deleteThreePid of the phone number answered %s, want id_server_unbind_result no-support", results["deleteThreePidMsisdn"])
	}
}

// journeyResults are the results of a journey's steps, by step name.
type journeyResults map[string]json.RawMessage

// runSteps runs the matrix-js-sdk journey with opts, logs every step, fails
// t unless it ran exactly the steps want (in order, each ok), and returns
// each step's result.
func runSteps(ctx context.Context, t *testing.T, env Env, opts JourneyOptions, want []string) journeyResults {
	t.Helper()
	start := time.Now()
	steps, err := RunJourney(ctx, env, opts)
	t.Logf("js-sdk journey (steps %q) took %v", opts.Steps, time.Since(start).Round(time.Millisecond))
	for _, s := range steps {
		t.Logf("journey: %s ok=%v %d ms result=%s error=%+v", s.Step, s.OK, s.MS, s.Result, s.Error)
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	results := journeyResults{}
	for _, s := range steps {
		names = append(names, s.Step)
		results[s.Step] = s.Result
	}
	if !slices.Equal(names, want) {
		t.Fatalf("steps %v, want %v", names, want)
	}
	return results
}

// decode unmarshals step's result into v; it stops the test when it cannot.
func (r journeyResults) decode(t *testing.T, step string, v any) {
	t.Helper()
	if err := json.Unmarshal(r[step], v); err != nil {
		t.Fatalf("step %s: %v: %s", step, err, r[step])
	}
}

// checkUIAAdd checks an add step of journey.mjs (addWithUIA): a 401 with
// Dendrite's password flow and a session, then {} once the password passed.
func (r journeyResults) checkUIAAdd(t *testing.T, step string) {
	t.Helper()
	var add struct {
		Challenge struct {
			Flows   []any  `json:"flows"`
			Session string `json:"session"`
		} `json:"challenge"`
		Result map[string]any `json:"result"`
	}
	r.decode(t, step, &add)
	if !reflect.DeepEqual(add.Challenge.Flows, passwordFlows) || add.Challenge.Session == "" {
		t.Errorf("%s: UIA challenge %+v, want Dendrite's password flow with a session", step, add.Challenge)
	}
	if len(add.Result) != 0 {
		t.Errorf("%s answered %v, want {}", step, add.Result)
	}
}

// checkListedOnly checks that a getThreePids step lists exactly one 3PID, the
// given one, validated and then added.
func (r journeyResults) checkListedOnly(t *testing.T, step, medium, address string) {
	t.Helper()
	var listed struct {
		Threepids []struct {
			Medium      string `json:"medium"`
			Address     string `json:"address"`
			ValidatedAt int64  `json:"validated_at"`
			AddedAt     int64  `json:"added_at"`
		} `json:"threepids"`
	}
	r.decode(t, step, &listed)
	if len(listed.Threepids) != 1 || listed.Threepids[0].Medium != medium || listed.Threepids[0].Address != address ||
		listed.Threepids[0].ValidatedAt <= 0 || listed.Threepids[0].AddedAt < listed.Threepids[0].ValidatedAt {
		t.Errorf("%s: %s, want only %s %s, validated and added", step, r[step], medium, address)
	}
}

// journeyControl serves journey.mjs's control endpoint: what a client cannot
// do alone (read the mail and the SMS, validate on the identity server, make
// someone else take the address over).
type journeyControl struct {
	sink       *fakes.SMTPSink
	sms        *fakes.SMSSink
	is         *fakes.IdentityServer
	email      string
	msisdn     string
	homeserver string
	nginxURL   string
}

func (c *journeyControl) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /mail", c.serve(c.mail))
	mux.HandleFunc("GET /sms", c.serve(c.readSMS))
	mux.HandleFunc("GET /identity-session", c.serve(c.identitySession))
	mux.HandleFunc("GET /identity-binding", c.serve(c.identityBinding))
	mux.HandleFunc("POST /takeover", c.serve(c.takeover))
	return mux
}

// serve answers fn's result as JSON, or its error as a 500 with the message.
func (c *journeyControl) serve(fn func(ctx context.Context, r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), controlWait)
		defer cancel()
		res, err := fn(ctx, r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(res)
	}
}

// mail waits for the next validation mail to ?to= and answers its link.
func (c *journeyControl) mail(ctx context.Context, r *http.Request) (any, error) {
	to := r.URL.Query().Get("to")
	var link string
	err := pollUntil(ctx, func() bool {
		for _, m := range c.sink.Mails() {
			if slices.ContainsFunc(m.To, func(rcpt string) bool { return strings.EqualFold(rcpt, to) }) {
				link = m.FirstLink()
				return true
			}
		}
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("no mail to %s: %w", to, err)
	}
	return map[string]string{"link": link}, nil
}

// readSMS waits for the validation SMS to the journey's phone number and
// answers it as the gateway got it: {"to","token","text"}.
func (c *journeyControl) readSMS(ctx context.Context, _ *http.Request) (any, error) {
	var found *fakes.SMS
	err := pollUntil(ctx, func() bool {
		for _, m := range c.sms.Messages() {
			if m.To == c.msisdn {
				found = &m
				return true
			}
		}
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("no SMS to %s (the gateway got %+v): %w", c.msisdn, c.sms.Messages(), err)
	}
	return found, nil
}

// identitySession validates the address on the identity server, as the user
// would with its requestToken and the link of its mail.
func (c *journeyControl) identitySession(context.Context, *http.Request) (any, error) {
	secret, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	token, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	sid := c.is.AddValidatedSession("email", c.email, secret, token)
	return map[string]string{"sid": sid, "client_secret": secret, "id_access_token": token}, nil
}

// identityBinding answers whom the identity server binds the journey's
// address to now ("" for nobody).
func (c *journeyControl) identityBinding(context.Context, *http.Request) (any, error) {
	return map[string]string{"mxid": c.is.Bindings()[c.email]}, nil
}

// takeover waits until a long-polling /sync is parked in threepidd, binds the
// address to newOwner on the identity server (as newOwner's homeserver would)
// and has the identity server tell threepidd, through nginx.
func (c *journeyControl) takeover(ctx context.Context, _ *http.Request) (any, error) {
	if err := pollUntil(ctx, func() bool { return gaugeValue(waitingLongPolls) >= 1 }); err != nil {
		return nil, fmt.Errorf("no long-polling /sync parked in threepidd: %w", err)
	}
	replaced := c.is.Bindings()[c.email]
	secret, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	token, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	sid := c.is.AddValidatedSession("email", c.email, secret, token)
	resp, err := peers.Send(ctx, support.Request{Method: http.MethodPost, URL: c.is.URL() + "/_matrix/identity/v2/3pid/bind", Token: token,
		Body: map[string]string{"sid": sid, "client_secret": secret, "mxid": newOwner}})
	if err != nil {
		return nil, fmt.Errorf("bind %s on the identity server: %w", newOwner, err)
	}
	if resp.Status != http.StatusOK {
		return nil, fmt.Errorf("bind %s on the identity server: status %d", newOwner, resp.Status)
	}
	update := onupdate.Body{Threepid: c.email, Medium: "email", Deleted: false, MXID: newOwner}
	if err := onupdate.Send(ctx, peers.HTTP, c.is.Key(), c.is.Name(), c.homeserver, c.nginxURL, update); err != nil {
		return nil, err
	}
	return map[string]string{"mxid": newOwner, "replaced": replaced}, nil
}

// pollUntil calls cond every pollInterval until it holds or ctx ends.
func pollUntil(ctx context.Context, cond func() bool) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// gaugeValue reads a gauge of threepidd's registry (threepidd runs in this
// process); 0 when it is not there.
func gaugeValue(name string) float64 {
	families, err := metrics.Registry.Gather()
	if err != nil {
		return 0
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}
