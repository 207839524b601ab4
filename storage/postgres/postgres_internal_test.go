package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestRebind(t *testing.T) {
	d := &dialect{}
	for _, c := range []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = $1 AND c = $2"},
		{"INSERT INTO t VALUES (?,?,?,?,?,?,?,?,?,?,?)", "INSERT INTO t VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"},
		{"SELECT '?', \"?\" FROM t WHERE a = ?", "SELECT '?', \"?\" FROM t WHERE a = $1"},
		{"SELECT 'it''s ?' WHERE a = ?", "SELECT 'it''s ?' WHERE a = $1"},
	} {
		if got := d.Rebind(c.in); got != c.want {
			t.Errorf("Rebind(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestChannelName(t *testing.T) {
	if got := channelName("public"); got != "threepidd_wake_public" {
		t.Errorf("channelName(public) = %q", got)
	}
	long := strings.Repeat("s", 60)
	a, b := channelName(long), channelName(long+"x")
	if len(a) > 63 || len(b) > 63 || a == b {
		t.Errorf("long schemas: %q, %q: want distinct names of at most 63 bytes", a, b)
	}
}

func TestNotifyQuery(t *testing.T) {
	d := &dialect{channel: "it's"}
	if got, want := d.NotifyQuery(), `SELECT pg_notify('it''s', ?)`; got != want {
		t.Errorf("NotifyQuery() = %q, want %q", got, want)
	}
}

// TestListenPings checks that a quiet listener pings its connection and goes
// on receiving afterwards.
func TestListenPings(t *testing.T) {
	dsn := os.Getenv("THREEPIDD_TEST_POSTGRES")
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("THREEPIDD_TEST_POSTGRES is not set (required when CI=true)")
		}
		t.Skip("THREEPIDD_TEST_POSTGRES is not set")
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	schema := "hb_" + hex.EncodeToString(b[:]) // names the channel only
	d := newDialect(schema, cfg)
	d.health = 20 * time.Millisecond

	ctx, cancel := context.WithCancel(t.Context())
	listening := make(chan struct{}, 1)
	delivered := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- d.Listen(ctx, func(context.Context) error {
			listening <- struct{}{}
			return nil
		}, func(p string) { delivered <- p })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Listen: %v", err)
		}
	}()
	<-listening

	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	// Poll until the listener's last statement is a ping.
	app := d.listenConfig.RuntimeParams["application_name"]
	for deadline := time.Now().Add(10 * time.Second); ; {
		var q string
		err := admin.QueryRow(ctx, `SELECT query FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&q)
		if err == nil && q == "-- ping" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listener never pinged (last statement %q, %v)", q, err)
		}
		time.Sleep(10 * time.Millisecond) // polling the server; nothing to wait on
	}
	if _, err := admin.Exec(ctx, `SELECT pg_notify($1, 'hello')`, d.channel); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-delivered:
		if p != "hello" {
			t.Errorf("delivered %q, want hello", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing delivered after pings")
	}
}
