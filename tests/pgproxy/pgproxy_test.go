package pgproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// echoServer answers every line with the same line, until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

// roundTrip sends line over c and reads the echo.
func roundTrip(c net.Conn, line string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return got, err
}

func TestProxyCutAndRestore(t *testing.T) {
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "hello"); err != nil || got != "hello\n" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	if p.Accepted() != 1 || p.Open() != 2 {
		t.Fatalf("accepted %d, open %d; want 1 and 2 (both sides)", p.Accepted(), p.Open())
	}

	p.Cut()
	if _, err := roundTrip(c, "after cut"); err == nil {
		t.Fatal("a connection survived the cut")
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while cut: %v, want connection refused", err)
	}
	if p.Open() != 0 {
		t.Fatalf("%d connections open after the cut", p.Open())
	}

	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatalf("dial after restore: %v", err)
	}
	defer c2.Close()
	if got, err := roundTrip(c2, "again"); err != nil || got != "again\n" {
		t.Fatalf("after restore: %q, %v", got, err)
	}
}

func TestProxyDSN(t *testing.T) {
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, c := range []struct {
		dsn, want string
		ok        bool
	}{
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable&search_path=t_1",
			"postgres://postgres@" + p.Addr() + "/test?sslmode=disable&search_path=t_1", true},
		{"postgresql://u:pw@db.example:6543/x", "postgresql://u:pw@" + p.Addr() + "/x", true},
		{"host=127.0.0.1 dbname=test", "", false},
		{"mysql://127.0.0.1/test", "", false},
	} {
		got, err := p.DSN(c.dsn)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("DSN(%q) = %q, %v; want %q (ok %v)", c.dsn, got, err, c.want, c.ok)
		}
	}
}
