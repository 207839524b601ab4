package homeserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/threepidd/threepidd/mxerr"
)

// AdminCallTimeout bounds one call to Synapse's admin API.
const AdminCallTimeout = 30 * time.Second

// ErrUserNotFound is returned by [SynapseAdmin.User] for a user the homeserver
// does not know.
var ErrUserNotFound = errors.New("homeserver: no such user")

// SynapseAdmin is a client of the parts of Synapse's admin API threepidd uses:
// listing local users, reading a user's 3PIDs, and replacing them.
type SynapseAdmin struct {
	c     *Client
	token string
}

// SynapseAdmin returns a client of Synapse's admin API on this homeserver,
// authenticated with token (homeserver.admin_token).
func (c *Client) SynapseAdmin(token string) *SynapseAdmin {
	return &SynapseAdmin{c: c, token: token}
}

// SynapseThreepid is a 3PID as Synapse's admin API shows it. Address is as the
// homeserver stores it, which need not be canonical for rows older than
// Synapse's canonicalisation.
type SynapseThreepid struct {
	Medium      string `json:"medium"`
	Address     string `json:"address"`
	ValidatedAt int64  `json:"validated_at,omitempty"`
	AddedAt     int64  `json:"added_at,omitempty"`
}

// SynapseUser is what threepidd reads of GET /_synapse/admin/v2/users/{userId}.
type SynapseUser struct {
	Name        string
	Deactivated bool
	Threepids   []SynapseThreepid
}

// UnmarshalJSON reads the admin API's user object; "deactivated" may be a
// boolean or, from Synapse before 1.97, 0 or 1.
func (u *SynapseUser) UnmarshalJSON(data []byte) error {
	var raw struct {
		Name        string            `json:"name"`
		Deactivated flexBool          `json:"deactivated"`
		Threepids   []SynapseThreepid `json:"threepids"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	*u = SynapseUser{Name: raw.Name, Deactivated: bool(raw.Deactivated), Threepids: raw.Threepids}
	return nil
}

// UserPage is one page of GET /_synapse/admin/v2/users.
type UserPage struct {
	// Users are the users on this page, in the listing's order (by name).
	Users []ListedUser
	// Total is how many users the listing has in all.
	Total int
	// Next is the from of the next page, "" after the last one.
	Next string
}

// ListedUser is a user as the listing shows it.
type ListedUser struct {
	Name        string
	Deactivated bool
}

// AdminError is a refusal from the admin API.
type AdminError struct{ mxerr.Remote }

// Error implements error.
func (e *AdminError) Error() string {
	if e.ErrCode == "" {
		return fmt.Sprintf("homeserver admin API answered HTTP %d", e.Status)
	}
	return fmt.Sprintf("homeserver admin API answered HTTP %d %s: %s", e.Status, e.ErrCode, e.Message)
}

// Temporary reports whether the call may succeed later: the homeserver failed
// (5xx), rate-limited us (429), or refused the admin token (401, 403), which
// an operator fixes in the homeserver without touching threepidd.
func (e *AdminError) Temporary() bool {
	switch {
	case e.Status >= 500, e.Status == http.StatusTooManyRequests,
		e.Status == http.StatusUnauthorized, e.Status == http.StatusForbidden:
		return true
	}
	return false
}

// TemporaryAdminError reports whether err, from a [SynapseAdmin] call, may go
// away on a retry: a transport failure or a temporary [AdminError].
func TemporaryAdminError(err error) bool {
	var ae *AdminError
	if errors.As(err, &ae) {
		return ae.Temporary()
	}
	return err != nil && !errors.Is(err, ErrUserNotFound) && !errors.Is(err, errBadAnswer)
}

// errBadAnswer marks an answer that is not what the admin API documents.
var errBadAnswer = errors.New("unreadable answer")

// ListUsers returns the page of local users starting at from ("" or "0" for
// the first), at most limit of them, guests excluded. Deactivated and locked
// users are not listed (Synapse's default).
func (a *SynapseAdmin) ListUsers(ctx context.Context, from string, limit int) (UserPage, error) {
	return a.listUsers(ctx, from, limit, nil)
}

// ListAccounts is ListUsers with deactivated and locked users included:
// every local account but guests, in a listing whose offsets only grow as
// accounts are registered (Synapse never deletes an account), so that a
// resumed walk skips nobody.
func (a *SynapseAdmin) ListAccounts(ctx context.Context, from string, limit int) (UserPage, error) {
	return a.listUsers(ctx, from, limit, url.Values{"deactivated": {"true"}, "locked": {"true"}})
}

func (a *SynapseAdmin) listUsers(ctx context.Context, from string, limit int, extra url.Values) (UserPage, error) {
	if from == "" {
		from = "0"
	}
	q := url.Values{"from": {from}, "limit": {strconv.Itoa(limit)}, "guests": {"false"}}
	for k, v := range extra {
		q[k] = v
	}
	var resp struct {
		Users []struct {
			Name        string   `json:"name"`
			Deactivated flexBool `json:"deactivated"`
		} `json:"users"`
		Total     int             `json:"total"`
		NextToken json.RawMessage `json:"next_token"`
	}
	if err := a.call(ctx, http.MethodGet, "/_synapse/admin/v2/users?"+q.Encode(), nil, &resp); err != nil {
		return UserPage{}, fmt.Errorf("list users from %s: %w", from, err)
	}
	page := UserPage{Total: resp.Total, Users: make([]ListedUser, 0, len(resp.Users))}
	for _, u := range resp.Users {
		page.Users = append(page.Users, ListedUser{Name: u.Name, Deactivated: bool(u.Deactivated)})
	}
	// Synapse sends next_token as a string; older versions sent a number.
	if len(resp.NextToken) > 0 && string(resp.NextToken) != "null" {
		var s string
		if json.Unmarshal(resp.NextToken, &s) != nil {
			s = string(resp.NextToken)
		}
		page.Next = s
	}
	return page, nil
}

// ThreepidHolder returns the local user holding (medium, address) in the
// homeserver's own table, or "" when nobody does: GET
// /_synapse/admin/v1/threepid/{medium}/users/{address}, whose 404 means
// nobody. Synapse compares the address byte for byte, so address must be
// canonical (as Synapse stores every 3PID it adds).
func (a *SynapseAdmin) ThreepidHolder(ctx context.Context, medium, address string) (string, error) {
	var resp struct {
		UserID string `json:"user_id"`
	}
	err := a.call(ctx, http.MethodGet, "/_synapse/admin/v1/threepid/"+url.PathEscape(medium)+"/users/"+url.PathEscape(address), nil, &resp)
	var ae *AdminError
	switch {
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
		return "", nil
	case err != nil:
		return "", fmt.Errorf("look up the holder of a %s: %w", medium, err)
	case resp.UserID == "":
		return "", fmt.Errorf("look up the holder of a %s: %w: no user_id", medium, errBadAnswer)
	}
	return resp.UserID, nil
}

// User returns userID's account as the admin API shows it, or ErrUserNotFound.
func (a *SynapseAdmin) User(ctx context.Context, userID string) (SynapseUser, error) {
	var u SynapseUser
	err := a.call(ctx, http.MethodGet, adminUserPath(userID), nil, &u)
	var ae *AdminError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return SynapseUser{}, fmt.Errorf("get %s: %w", userID, ErrUserNotFound)
	}
	if err != nil {
		return SynapseUser{}, fmt.Errorf("get %s: %w", userID, err)
	}
	return u, nil
}

// Users returns the accounts of userIDs as [SynapseAdmin.User] does, in order,
// at most parallel at a time; an account the homeserver no longer knows is
// returned empty (Name ""). The first other error is returned.
func (a *SynapseAdmin) Users(ctx context.Context, userIDs []string, parallel int) ([]SynapseUser, error) {
	out := make([]SynapseUser, len(userIDs))
	errs := make([]error, len(userIDs))
	sem := make(chan struct{}, max(parallel, 1))
	var wg sync.WaitGroup
	for i, id := range userIDs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			u, err := a.User(ctx, id)
			if errors.Is(err, ErrUserNotFound) {
				return
			}
			out[i], errs[i] = u, err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// SetThreepids replaces userID's 3PIDs with list (only medium and address are
// sent) and returns the list the homeserver holds afterwards (its answer).
// Synapse CREATES a user it does not know on this call, so callers must have
// seen the user with [SynapseAdmin.User] first. See [Mirror] for what Synapse
// does with the list.
func (a *SynapseAdmin) SetThreepids(ctx context.Context, userID string, list []SynapseThreepid) ([]SynapseThreepid, error) {
	type pair struct {
		Medium  string `json:"medium"`
		Address string `json:"address"`
	}
	body := struct {
		Threepids []pair `json:"threepids"`
	}{Threepids: make([]pair, 0, len(list))}
	for _, tp := range list {
		body.Threepids = append(body.Threepids, pair{Medium: tp.Medium, Address: tp.Address})
	}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode 3PIDs of %s: %w", userID, err)
	}
	var after SynapseUser
	if err := a.call(ctx, http.MethodPut, adminUserPath(userID), data, &after); err != nil {
		return nil, fmt.Errorf("put 3PIDs of %s: %w", userID, err)
	}
	return after.Threepids, nil
}

func adminUserPath(userID string) string {
	return "/_synapse/admin/v2/users/" + url.PathEscape(userID)
}

// call makes one admin API request, bounded by AdminCallTimeout, and decodes a
// 2xx answer into out (unless nil).
func (a *SynapseAdmin) call(ctx context.Context, method, pathAndQuery string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, AdminCallTimeout)
	defer cancel()
	status, resp, err := a.c.do(ctx, Caller{AccessToken: a.token}, method, pathAndQuery, body)
	if err != nil {
		return err
	}
	if status/100 != 2 {
		return &AdminError{Remote: *mxerr.DecodeRemote(status, resp)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(resp, out); err != nil {
		return fmt.Errorf("%w from the admin API: %v", errBadAnswer, err)
	}
	return nil
}

// flexBool reads a JSON boolean, or 0/1 as Synapse before 1.97 sent flags.
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	switch string(data) {
	case "true", "1":
		*b = true
	case "false", "0", "null":
		*b = false
	default:
		return fmt.Errorf("not a boolean: %s", data)
	}
	return nil
}
