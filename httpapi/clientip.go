package httpapi

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/threepidd/threepidd/outbound"
)

// Proxies are the reverse proxies whose X-Forwarded-For is believed
// (trusted_proxies).
type Proxies []netip.Prefix

// ParseProxies parses CIDRs or bare IPs (as trusted_proxies holds them).
func ParseProxies(list []string) (Proxies, error) {
	ps, err := outbound.ParsePrefixes(list)
	return Proxies(ps), err
}

func (ps Proxies) trusted(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range ps {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// FromProxy reports whether r comes straight from a trusted proxy, whose
// headers (X-Forwarded-For, X-Request-ID) are believed.
func (ps Proxies) FromProxy(r *http.Request) bool {
	peer, err := netip.ParseAddr(peerHost(r))
	return err == nil && ps.trusted(peer)
}

// peerHost is the host part of r's RemoteAddr.
func peerHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// ClientIP returns the address of the client: the peer, unless the peer is a
// trusted proxy, in which case the right-most X-Forwarded-For entry that is
// not itself a trusted proxy.
func (ps Proxies) ClientIP(r *http.Request) string {
	host := peerHost(r)
	peer, err := netip.ParseAddr(host)
	if err != nil || !ps.trusted(peer) {
		return host
	}
	client := peer.Unmap().String()
	forwarded := r.Header.Values("X-Forwarded-For")
	if len(forwarded) == 0 {
		return client
	}
	hops := strings.Split(strings.Join(forwarded, ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		client = h.Unmap().String()
		if !ps.trusted(h) {
			break
		}
	}
	return client
}
