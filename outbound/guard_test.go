package outbound_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/outbound"
)

func TestGuardAllowed(t *testing.T) {
	synapse, err := outbound.NewGuard(config.DefaultIPRangeDenylist, nil)
	if err != nil {
		t.Fatal(err)
	}
	allowLoopback, err := outbound.NewGuard(config.DefaultIPRangeDenylist, []string{"127.0.0.1/32", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	nothingListed, err := outbound.NewGuard(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ip            string
		synapse       bool // allowed by the default denylist
		allowLoopback bool // allowed with 127.0.0.1/32 and ::1 allowlisted
		nothingListed bool // allowed with empty lists
	}{
		{"8.8.8.8", true, true, true},
		{"2606:4700:4700::1111", true, true, true},
		{"127.0.0.1", false, true, true},
		{"127.0.0.2", false, false, true},
		{"::1", false, true, true},
		{"10.1.2.3", false, false, true},
		{"172.16.0.1", false, false, true},
		{"172.32.0.1", true, true, true},
		{"192.168.1.1", false, false, true},
		{"100.64.0.1", false, false, true},
		{"169.254.169.254", false, false, true},
		{"224.0.0.1", false, false, true},
		{"198.18.0.1", false, false, true},
		{"fe80::1", false, false, true},
		{"fe80::1%eth0", false, false, true},
		{"fd00::1", false, false, true},
		{"ff02::1", false, false, true},
		{"2001:db8::1", false, false, true},
		{"0.0.0.0", false, false, false},
		{"::", false, false, false},
		// IPv6 forms of an IPv4 address are judged by that address.
		{"::ffff:127.0.0.1", false, true, true},
		{"::ffff:10.0.0.1", false, false, true},
		{"::ffff:8.8.8.8", true, true, true},
		{"::10.0.0.1", false, false, true},
		{"2002:a00:1::1", false, false, true}, // 6to4 of 10.0.0.1
		{"2002:808:808::1", true, true, true}, // 6to4 of 8.8.8.8
	}
	for _, tt := range tests {
		ip := netip.MustParseAddr(tt.ip)
		for _, g := range []struct {
			name  string
			guard *outbound.Guard
			want  bool
		}{{"default", synapse, tt.synapse}, {"loopback allowed", allowLoopback, tt.allowLoopback}, {"empty lists", nothingListed, tt.nothingListed}} {
			if got := g.guard.Allowed(ip); got != g.want {
				t.Errorf("%s guard: Allowed(%s) = %v, want %v", g.name, tt.ip, got, g.want)
			}
		}
	}
	if _, err := outbound.NewGuard([]string{"10.0.0.0/8", "intranet"}, nil); err == nil {
		t.Error("NewGuard accepted a denylist entry that is not a CIDR")
	}
}

// connectionArrived reports whether ln accepts a connection within wait.
func connectionArrived(t *testing.T, ln net.Listener, wait time.Duration) bool {
	t.Helper()
	if err := ln.(*net.TCPListener).SetDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err == nil {
		c.Close()
		return true
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("accept: %v", err)
	}
	return false
}

// TestGuardedTransportNeverConnects: a refused address is refused before the
// connection, whether the URL names it or a name resolves to it, and the
// error says so.
func TestGuardedTransportNeverConnects(t *testing.T) {
	guard, err := outbound.NewGuard(config.DefaultIPRangeDenylist, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	client := outbound.NewClient(outbound.NewGuardedTransport(guard, nil), 5*time.Second)
	for _, host := range []string{"127.0.0.1", "localhost"} {
		t.Run(host, func(t *testing.T) {
			req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+net.JoinHostPort(host, strconv.Itoa(port))+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("request to %s answered %d", host, resp.StatusCode)
			}
			var denied *outbound.DeniedError
			if !errors.As(err, &denied) || !denied.IP.IsLoopback() {
				t.Fatalf("error %v, want a DeniedError for a loopback address", err)
			}
			if connectionArrived(t, ln, 200*time.Millisecond) {
				t.Fatal("the refused address got a connection")
			}
		})
	}
}

// TestGuardedTransportAllowlist: an allowlisted address is dialled, over
// HTTPS with the given roots, and redirects are not followed.
func TestGuardedTransportAllowlist(t *testing.T) {
	var elsewhere int
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere++ }))
	defer target.Close()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, target.URL, http.StatusFound)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	guard, err := outbound.NewGuard(config.DefaultIPRangeDenylist, []string{"127.0.0.1/32"})
	if err != nil {
		t.Fatal(err)
	}
	client := outbound.NewClient(outbound.NewGuardedTransport(guard, srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs), 5*time.Second)
	resp, err := client.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("allowlisted server answered %d", resp.StatusCode)
	}
	resp, err = client.Get(srv.URL + "/moved")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || elsewhere != 0 {
		t.Fatalf("redirect: status %d, target hit %d times; want the 302 itself", resp.StatusCode, elsewhere)
	}
	// Without those roots the test server's certificate is not trusted.
	plain := outbound.NewClient(outbound.NewGuardedTransport(guard, nil), 5*time.Second)
	if resp, err := plain.Get(srv.URL + "/"); err == nil {
		resp.Body.Close()
		t.Fatal("a certificate of an unknown CA was accepted")
	}
}

// The seed corpus is in testdata/fuzz/FuzzGuard.

// FuzzGuard checks the guard on any address: it never panics, and an IPv4
// address is judged alike in each of its IPv6 forms (IPv4-mapped and 6to4),
// so a resolver answering ::ffff:127.0.0.1 or 2002:7f00:1:: gets no further
// than one answering 127.0.0.1.
func FuzzGuard(f *testing.F) {
	guard, err := outbound.NewGuard(config.DefaultIPRangeDenylist, []string{"10.1.0.0/16"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		ip, ok := netip.AddrFromSlice(raw)
		if !ok {
			return
		}
		allowed := guard.Allowed(ip)
		if !ip.Is4() {
			return
		}
		b := ip.As4()
		mapped := netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: b[0], 13: b[1], 14: b[2], 15: b[3]})
		sixToFour := netip.AddrFrom16([16]byte{0: 0x20, 1: 0x02, 2: b[0], 3: b[1], 4: b[2], 5: b[3], 15: 1})
		if guard.Allowed(mapped) != allowed || guard.Allowed(sixToFour) != allowed {
			t.Fatalf("%s allowed %v, but %s %v and %s %v", ip, allowed, mapped, guard.Allowed(mapped), sixToFour, guard.Allowed(sixToFour))
		}
	})
}
