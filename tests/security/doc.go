// Package security holds threepidd's tests against hostile input, each a real
// request to the in-process server of package harness: one user reaching
// another's 3PIDs, bindings or notifications; revoked access tokens; slow
// clients; oversized bodies; secrets in the logs; guessing validation tokens.
// The package holds only tests.
package security
