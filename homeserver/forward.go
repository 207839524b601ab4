package homeserver

import "context"

// Forward sends a client's request to the homeserver unchanged: the same
// method, path and body, with the caller's token, appservice user_id and
// forwarded headers. It returns the homeserver's status and (bounded) body;
// a transport failure is a 502/504 Matrix error. It is how /account/deactivate
// reaches the homeserver with its user-interactive auth intact.
func (c *Client) Forward(ctx context.Context, caller Caller, method, path string, body []byte) (int, []byte, error) {
	return c.do(ctx, caller, method, path+caller.query(), body)
}
