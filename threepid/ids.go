package threepid

import (
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// maxUserIDLength is the spec's limit on a whole user ID, in bytes.
const maxUserIDLength = 255

// maxSecretLength bounds client secrets and session ids (the spec's grammar).
const maxSecretLength = 255

// ValidClientSecret reports whether s is a client secret as the spec allows:
// 1 to 255 characters of [0-9a-zA-Z.=_-].
func ValidClientSecret(s string) bool { return validSecret(s) }

// ValidSID reports whether s is a validation session id: the same grammar as
// a client secret.
func ValidSID(s string) bool { return validSecret(s) }

func validSecret(s string) bool {
	if len(s) == 0 || len(s) > maxSecretLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isSecretChar(s[i]) {
			return false
		}
	}
	return true
}

func isSecretChar(c byte) bool {
	return isAlnum(c) || c == '.' || c == '=' || c == '_' || c == '-'
}

func isAlnum(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// ValidUserID reports whether s is a Matrix user ID "@localpart:server_name"
// of at most 255 bytes. The localpart follows the spec's historical grammar
// (printable ASCII except ":"), which homeservers still accept for existing
// users; the server name must satisfy [ValidServerName].
func ValidUserID(s string) bool {
	if len(s) > maxUserIDLength || !strings.HasPrefix(s, "@") {
		return false
	}
	local, server, ok := strings.Cut(s[1:], ":")
	if !ok || local == "" {
		return false
	}
	for i := 0; i < len(local); i++ {
		if local[i] < 0x21 || local[i] > 0x7e {
			return false
		}
	}
	return ValidServerName(server)
}

// UserServerName returns the server name of a user ID: everything after the
// first ":". It returns "" when userID does not start with "@" or has no ":".
func UserServerName(userID string) string {
	if !strings.HasPrefix(userID, "@") {
		return ""
	}
	_, server, ok := strings.Cut(userID, ":")
	if !ok {
		return ""
	}
	return server
}

// ValidServerName reports whether s is a server name as the spec defines it: a
// DNS name or IPv4 address, or an IPv6 literal in brackets, optionally followed
// by ":" and a port of 1 to 5 digits (at most 65535).
func ValidServerName(s string) bool {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		host, port = s[:end+1], s[end+1:]
		if port != "" && !strings.HasPrefix(port, ":") {
			return false
		}
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i:]
	}
	if port != "" && !validPort(port[1:]) {
		return false
	}
	if strings.HasPrefix(host, "[") {
		addr, err := netip.ParseAddr(host[1 : len(host)-1])
		return err == nil && addr.Is6() && addr.Zone() == ""
	}
	return validDNSName(host)
}

// validDNSName checks the spec's dns-name: 1 to 255 of [0-9A-Za-z.-]. IPv4
// addresses are a subset.
func validDNSName(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && s[i] != '-' && s[i] != '.' {
			return false
		}
	}
	return true
}

func validPort(s string) bool {
	if len(s) == 0 || len(s) > 5 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	n, err := strconv.Atoi(s)
	return err == nil && n <= 65535
}

// ValidNextLink reports whether s is an absolute http or https URL whose
// host is a DNS name or an IP address, the only kind of next_link threepidd
// redirects to. A backslash, which browsers read as "/" where Go does not, is
// refused, so that the host threepidd checks is the one a browser visits.
func ValidNextLink(s string) bool {
	_, ok := parseNextLink(s)
	return ok
}

// parseNextLink parses a valid next_link.
func parseNextLink(s string) (*url.URL, bool) {
	if strings.ContainsRune(s, '\\') {
		return nil, false
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "" || (u.Port() != "" && !validPort(u.Port())) {
		return nil, false
	}
	host := u.Hostname()
	if addr, err := netip.ParseAddr(host); err == nil {
		return u, addr.Zone() == ""
	}
	return u, host != "" && validDNSName(host)
}

// NextLinkAllowed reports whether next_link is valid and may be used under
// allowed, with the semantics of Synapse's next_link_domain_whitelist: nil
// allows any host; otherwise the link's host name (lower-cased, without port
// or brackets: Python's urlparse(next_link).hostname) must be one of allowed,
// exactly (no subdomains). An empty list allows none.
func NextLinkAllowed(nextLink string, allowed []string) bool {
	u, ok := parseNextLink(nextLink)
	if !ok {
		return false
	}
	return allowed == nil || slices.Contains(allowed, strings.ToLower(u.Hostname()))
}

// NextLinkOrigin returns the origin of a valid next_link, as a
// Content-Security-Policy source names it: scheme://host[:port], lower case.
func NextLinkOrigin(nextLink string) (string, bool) {
	u, ok := parseNextLink(nextLink)
	if !ok {
		return "", false
	}
	return u.Scheme + "://" + strings.ToLower(u.Host), true
}
