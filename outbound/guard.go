package outbound

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// alwaysDenied are refused whatever the lists say, as Synapse refuses them:
// connecting to them reaches this machine.
var alwaysDenied = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/32"), netip.MustParsePrefix("::/128")}

// Guard decides which IP addresses a guarded transport may connect to: none
// in the denylist unless the allowlist holds it too. An IPv6 address that
// carries an IPv4 one (IPv4-mapped, IPv4-compatible, 6to4) is judged by that
// IPv4 address as well, as Synapse's generate_ip_set does.
type Guard struct {
	deny, allow []netip.Prefix
}

// NewGuard returns a Guard for the denylist and allowlist, each a list of
// CIDRs or bare IP addresses. 0.0.0.0 and :: are always denied.
func NewGuard(denylist, allowlist []string) (*Guard, error) {
	deny, err := ParsePrefixes(denylist)
	if err != nil {
		return nil, fmt.Errorf("denylist: %w", err)
	}
	allow, err := ParsePrefixes(allowlist)
	if err != nil {
		return nil, fmt.Errorf("allowlist: %w", err)
	}
	return &Guard{deny: append(deny, alwaysDenied...), allow: allow}, nil
}

// ParsePrefixes parses CIDRs or bare IP addresses (a bare address is its own
// /32 or /128), as configuration lists hold them.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an IP address", s)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Allowed reports whether the guard lets a connection to ip through.
func (g *Guard) Allowed(ip netip.Addr) bool {
	ip = ip.WithZone("")
	for _, a := range embedded(ip) {
		if contains(g.deny, a) && !contains(g.allow, a) {
			return false
		}
	}
	return true
}

// embedded returns ip and, for an IPv6 address that carries an IPv4 address,
// that IPv4 address.
func embedded(ip netip.Addr) []netip.Addr {
	out := []netip.Addr{ip}
	if !ip.Is6() {
		return out
	}
	b := ip.As16()
	switch {
	case ip.Is4In6():
		out = append(out, ip.Unmap())
	case [12]byte(b[:12]) == [12]byte{}: // IPv4-compatible ::a.b.c.d (:: and ::1 are denied as such)
		out = append(out, netip.AddrFrom4([4]byte(b[12:])))
	case b[0] == 0x20 && b[1] == 0x02: // 6to4 2002:aabb:ccdd::/48
		out = append(out, netip.AddrFrom4([4]byte(b[2:6])))
	}
	return out
}

func contains(prefixes []netip.Prefix, ip netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// DeniedError is the error a guarded transport fails with when every address
// of a host is refused: no connection was attempted.
type DeniedError struct {
	// IP is the refused address.
	IP netip.Addr
}

// Error implements error.
func (e *DeniedError) Error() string {
	return fmt.Sprintf("outbound guard: %s is in a range threepidd does not connect to", e.IP)
}

// control is the dialer's Control hook: it runs once the name is resolved,
// for each address tried, after the socket is created and before it
// connects.
func (g *Guard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("outbound guard: cannot judge address %q: %w", address, err)
	}
	if !g.Allowed(ap.Addr()) {
		return &DeniedError{IP: ap.Addr()}
	}
	return nil
}

// NewGuardedTransport returns a pooled transport whose connections only go
// to addresses g allows, checked on every address a name resolves to, before
// connecting (a name that resolves to a loopback address is refused as the
// address itself is). roots, when not nil, replaces the system's root
// certificates for HTTPS. Like [NewTransport] it uses no proxy from the
// environment; callers bound requests with a client timeout.
func NewGuardedTransport(g *Guard, roots *x509.CertPool) http.RoundTripper {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second, Control: g.control}
	return userAgent{&http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false,
	}}
}
