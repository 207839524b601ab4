// Package clientapi serves threepidd's endpoints of the client-server API:
// the 3PIDs of an account (requestToken, submit_token, add, list, delete),
// binding on identity servers (bind, unbind) and /account/deactivate. Each
// handler parses the request, authorises it (package auth) and calls one
// service method (account, bindings); errors are Matrix errors.
package clientapi
