package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/threepid"
)

// hotUsers is how many users the list-cached operation spreads its requests
// over: few enough that their tokens stay in threepidd's whoami cache, which
// isolates threepidd's own overhead from the homeserver round trip a miss costs.
const hotUsers = 100

// errNoMail is a requestToken whose e-mail did not arrive in time.
var errNoMail = errors.New("no validation e-mail")

// iteration is one iteration of an operation on one side.
type iteration func(ctx context.Context, w *Worker, n int64) error

// operation is one kind of load: its measured steps and what an iteration
// does on threepidd and on the baseline.
type operation struct {
	// key selects the operation in THREEPIDD_TEST_LOAD_OPS.
	key string
	// name labels the whole iteration when there are several steps.
	name  string
	steps []string
	// max bounds the iterations of one round (0: only time does).
	max                 int64
	threepidd, baseline iteration
	// reset restores, after a round, what iterations [from, end) consumed
	// (nil: they consume nothing).
	reset func(ctx context.Context, from, end int64)
}

// operations lists the operations of a run, in the order they run.
func (r *rig) operations() []operation {
	hot := min(hotUsers, r.active)
	return []operation{
		{
			key:       "list",
			steps:     []string{"GET /account/3pid"},
			threepidd: r.list(r.active, false),
			baseline:  r.list(r.active, true),
		},
		{
			key:       "list-cached",
			steps:     []string{fmt.Sprintf("GET /account/3pid, %d users (token cached)", hot)},
			threepidd: r.list(hot, false),
			baseline:  r.list(hot, true),
		},
		{
			key:  "flow",
			name: "flow requestToken → add",
			steps: []string{
				"POST /account/3pid/email/requestToken",
				"the e-mail link: GET page, POST its form",
				"POST /account/3pid/add (UIA 401)",
				"POST /account/3pid/add",
			},
			threepidd: r.flowThreepidd,
			baseline:  r.flowBaseline,
		},
		{
			key:       "bind",
			name:      "bind + unbind",
			steps:     []string{"POST /account/3pid/bind", "POST /account/3pid/unbind"},
			threepidd: r.bindThreepidd,
			baseline:  r.bindBaseline,
		},
		{
			key:       "delete",
			steps:     []string{"POST /account/3pid/delete"},
			threepidd: r.deleteThreepidd,
			baseline:  r.deleteBaseline,
		},
		{
			key:       "onupdate",
			steps:     []string{"POST /_matrix/federation/v1/3pid/onupdate"},
			max:       int64(r.active),
			threepidd: r.onUpdateThreepidd,
			baseline:  r.onUpdateBaseline,
			reset:     r.bindSeeded,
		},
	}
}

// jsonBody encodes a request body (of plain maps and strings: never fails).
func jsonBody(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode request body: %v", err))
	}
	return b
}

// clientAPI is threepidd's client-server API prefix.
const clientAPI = "/_matrix/client/v3"

// threepidd calls path on threepidd with u's access token.
func (r *rig) threepidd(ctx context.Context, method, path string, u loadUser, body any, want int) ([]byte, error) {
	c := Call{Method: method, URL: r.url + path, Want: want}
	if u.Token != "" {
		c.Authorization = "Bearer " + u.Token
	}
	if body != nil {
		c.Body = jsonBody(body)
	}
	return r.client.Do(ctx, c)
}

// base calls path on the baseline as u.
func (r *rig) base(ctx context.Context, path string, u loadUser, body any) ([]byte, error) {
	c := Call{Method: http.MethodPost, URL: r.baseline + path, Header: UserHeader, HeaderValue: u.ID, Want: http.StatusOK}
	if body == nil {
		c.Method = http.MethodGet
	} else {
		c.Body = jsonBody(body)
	}
	return r.client.Do(ctx, c)
}

// randomUser picks a seeded user.
func (r *rig) randomUser(w *Worker) loadUser { return r.user(r.activeIndex(w.Rand.IntN(r.active))) }

// seeded returns the user and address of the seeded binding number n (modulo
// the active users): active user n's first address.
func (r *rig) seeded(n int64) (loadUser, string) {
	i := r.activeIndex(int(n % int64(r.active)))
	return r.user(i), r.pop.Address(i, 0)
}

// list is GET /account/3pid (on the baseline if baseline) for a user drawn
// from the first users active users.
func (r *rig) list(users int, baseline bool) iteration {
	return func(ctx context.Context, w *Worker, _ int64) error {
		u := r.user(r.activeIndex(w.Rand.IntN(users)))
		return w.Step(0, func() error {
			var err error
			if baseline {
				_, err = r.base(ctx, BaselineList, u, nil)
			} else {
				_, err = r.threepidd(ctx, http.MethodGet, clientAPI+"/account/3pid", u, nil, http.StatusOK)
			}
			return err
		})
	}
}

// flowThreepidd adds a new e-mail address to a random user as a client does:
// requestToken, the link from the e-mail, /3pid/add without auth (401 with a
// UIA session) and with the password.
func (r *rig) flowThreepidd(ctx context.Context, w *Worker, n int64) error {
	u := r.randomUser(w)
	address, secret := fmt.Sprintf("flow%d@load.test", n), fmt.Sprintf("secret%d", n)
	mail := r.sink.Expect(address)
	defer r.sink.Forget(address)
	var sid string
	err := w.Step(0, func() error {
		body, err := r.threepidd(ctx, http.MethodPost, clientAPI+"/account/3pid/email/requestToken", loadUser{},
			map[string]any{"client_secret": secret, "email": address, "send_attempt": 1}, http.StatusOK)
		if err != nil {
			return err
		}
		var tok struct {
			SID string `json:"sid"`
		}
		if err := json.Unmarshal(body, &tok); err != nil || tok.SID == "" {
			return fmt.Errorf("requestToken answered %s", body)
		}
		sid = tok.SID
		return nil
	})
	if err != nil {
		return err
	}
	var link string
	select {
	case link = <-mail:
	case <-time.After(mailWait):
		return fmt.Errorf("%w to %s within %v", errNoMail, address, mailWait)
	}
	err = w.Step(1, func() error { return r.client.OpenLink(ctx, link) })
	if err != nil {
		return err
	}
	var session string
	err = w.Step(2, func() error {
		body, err := r.threepidd(ctx, http.MethodPost, clientAPI+"/account/3pid/add", u,
			map[string]any{"sid": sid, "client_secret": secret}, http.StatusUnauthorized)
		if err != nil {
			return err
		}
		var uia struct {
			Session string `json:"session"`
		}
		if err := json.Unmarshal(body, &uia); err != nil || uia.Session == "" {
			return fmt.Errorf("/3pid/add without auth answered %s", body)
		}
		session = uia.Session
		return nil
	})
	if err != nil {
		return err
	}
	return w.Step(3, func() error {
		auth := map[string]any{
			"type":       "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": u.ID},
			"password":   fakes.PopulationPassword,
			"session":    session,
		}
		_, err := r.threepidd(ctx, http.MethodPost, clientAPI+"/account/3pid/add", u,
			map[string]any{"sid": sid, "client_secret": secret, "auth": auth}, http.StatusOK)
		return err
	})
}

// flowBaseline is the baseline's flow: requestToken (which answers the
// token), submit, add.
func (r *rig) flowBaseline(ctx context.Context, w *Worker, n int64) error {
	u := r.randomUser(w)
	address, secret := fmt.Sprintf("flow%d@load.test", n), fmt.Sprintf("secret%d", n)
	var tok BaselineToken
	err := w.Step(0, func() error {
		body, err := r.base(ctx, BaselineRequestToken, u, map[string]any{"client_secret": secret, "email": address, "send_attempt": 1})
		if err != nil {
			return err
		}
		if err := json.Unmarshal(body, &tok); err != nil || tok.Token == "" {
			return fmt.Errorf("baseline requestToken answered %s", body)
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = w.Step(1, func() error {
		_, err := r.base(ctx, BaselineSubmitToken, u, map[string]any{"sid": tok.SID, "client_secret": secret, "token": tok.Token})
		return err
	})
	if err != nil {
		return err
	}
	// Step 2, the UIA round trip, has no counterpart.
	return w.Step(3, func() error {
		_, err := r.base(ctx, BaselineAdd, u, map[string]any{"sid": tok.SID, "client_secret": secret})
		return err
	})
}

// bindThreepidd binds seeded 3PID n on bindIS (whose session the client
// validated beforehand) and unbinds it.
func (r *rig) bindThreepidd(ctx context.Context, w *Worker, n int64) error {
	u, address := r.seeded(n)
	secret, idToken := fmt.Sprintf("bind%d", n), fmt.Sprintf("idtoken%d", n)
	sid := r.bindIS.AddValidatedSession(threepid.MediumEmail, address, secret, idToken)
	err := w.Step(0, func() error {
		_, err := r.threepidd(ctx, http.MethodPost, clientAPI+"/account/3pid/bind", u, map[string]any{
			"client_secret": secret, "id_server": r.bindIS.Name(), "id_access_token": idToken, "sid": sid,
		}, http.StatusOK)
		return err
	})
	if err != nil {
		return err
	}
	return w.Step(1, func() error {
		body, err := r.threepidd(ctx, http.MethodPost, clientAPI+"/account/3pid/unbind", u, map[string]any{
			"medium": threepid.MediumEmail, "address": address, "id_server": r.bindIS.Name(),
		}, http.StatusOK)
		if err != nil {
			return err
		}
		if !jsonHas(body, "id_server_unbind_result", "success") {
			return fmt.Errorf("unbind answered %s", body)
		}
		return nil
	})
}

// jsonHas reports whether body is a JSON object whose key is the string value.
func jsonHas(body []byte, key, value string) bool {
	var m map[string]any
	return json.Unmarshal(body, &m) == nil && m[key] == value
}

func (r *rig) bindBaseline(ctx context.Context, w *Worker, n int64) error {
	u, address := r.seeded(n)
	body := map[string]any{"medium": threepid.MediumEmail, "address": address, "id_server": r.bindIS.Name()}
	err := w.Step(0, func() error {
		_, err := r.base(ctx, BaselineBind, u, body)
		return err
	})
	if err != nil {
		return err
	}
	return w.Step(1, func() error {
		_, err := r.base(ctx, BaselineUnbind, u, body)
		return err
	})
}

// deletable gives a random user a new address straight in the store (not
// timed: it stands for an earlier add) and returns them.
func (r *rig) deletable(ctx context.Context, w *Worker, n int64) (loadUser, map[string]any, error) {
	u := r.randomUser(w)
	address := fmt.Sprintf("del%d@%s", n, fakes.PopulationDomain)
	now := time.Now().UnixMilli()
	err := r.store.InsertAssociation(ctx, storage.Association{UserID: u.ID, Medium: threepid.MediumEmail, Address: address, ValidatedAt: now, AddedAt: now})
	return u, map[string]any{"medium": threepid.MediumEmail, "address": address}, err
}

// deleteThreepidd removes an address of a random user (bound nowhere).
func (r *rig) deleteThreepidd(ctx context.Context, w *Worker, n int64) error {
	u, body, err := r.deletable(ctx, w, n)
	if err != nil {
		return err
	}
	return w.Step(0, func() error {
		_, err := r.threepidd(ctx, http.MethodPost, clientAPI+"/account/3pid/delete", u, body, http.StatusOK)
		return err
	})
}

func (r *rig) deleteBaseline(ctx context.Context, w *Worker, n int64) error {
	u, body, err := r.deletable(ctx, w, n)
	if err != nil {
		return err
	}
	return w.Step(0, func() error {
		_, err := r.base(ctx, BaselineDelete, u, body)
		return err
	})
}

// takeover is the onupdate of iteration n: seeded 3PID n is now bound to a
// remote user (unique per n, so that no body is a replay of another), so
// its local holder loses the binding.
func (r *rig) takeover(n int64) onupdate.Body {
	_, address := r.seeded(n)
	return onupdate.Body{Threepid: address, Medium: threepid.MediumEmail, MXID: fmt.Sprintf("@taker%d:remote.test", n)}
}

// onUpdateThreepidd sends the takeover signed by onupdateIS (signing is not
// timed: it is the identity server's work).
func (r *rig) onUpdateThreepidd(ctx context.Context, w *Worker, n int64) error {
	body := jsonBody(r.takeover(n))
	is := r.onupdateIS
	auth, err := federation.SignRequest(is.Key(), is.Name(), harness.ServerName, federation.DestinationField,
		http.MethodPost, onupdate.Path, body)
	if err != nil {
		return err
	}
	return w.Step(0, func() error {
		_, err := r.client.Do(ctx, Call{Method: http.MethodPost, URL: r.url + onupdate.Path, Authorization: auth, Body: body, Want: http.StatusOK})
		return err
	})
}

func (r *rig) onUpdateBaseline(ctx context.Context, w *Worker, n int64) error {
	u := r.takeover(n)
	body := BaselineOnUpdateBody{Origin: r.onupdateIS.Name(), Threepid: u.Threepid, Medium: u.Medium, MXID: u.MXID}
	return w.Step(0, func() error {
		_, err := r.base(ctx, BaselineOnUpdate, loadUser{}, body)
		return err
	})
}
