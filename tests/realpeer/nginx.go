//go:build realpeer

package realpeer

import (
	"context"
	"testing"

	"github.com/threepidd/threepidd/tests/support"
)

// StartNginx starts a test's nginx (support.StartNginx) with upstream
// threepidd at threepiddAddr and upstream homeserver at homeserverAddr
// (host:port); it fails the test when nginx does not start.
func StartNginx(ctx context.Context, t testing.TB, env Env, threepiddAddr, homeserverAddr string) *support.Nginx {
	t.Helper()
	n, err := support.StartNginx(ctx, t, support.NginxOptions{Binary: env.Nginx, Threepidd: []string{threepiddAddr}, Homeserver: homeserverAddr})
	if err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	return n
}
