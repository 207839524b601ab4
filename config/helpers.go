package config

import (
	"net/netip"
	"strings"
)

// Name is the name the identity server signs with: signing_name, or
// server_name when that is unset.
func (is IdentityServer) Name() string {
	if is.SigningName != "" {
		return is.SigningName
	}
	return is.ServerName
}

// URL is the identity server's base URL without a trailing "/": base_url, or
// https://<server_name> when that is unset.
func (is IdentityServer) URL() string {
	if is.BaseURL != "" {
		return strings.TrimRight(is.BaseURL, "/")
	}
	return "https://" + is.ServerName
}

// IdentityServer returns the configured identity server that clients call
// serverName (their id_server).
func (c *Config) IdentityServer(serverName string) (IdentityServer, bool) {
	for _, is := range c.IdentityServers {
		if is.ServerName == serverName {
			return is, true
		}
	}
	return IdentityServer{}, false
}

// IdentityServerByOrigin returns the configured identity server that a signed
// request or association names as its origin: an entry whose server_name is
// origin, or else one whose signing_name is.
func (c *Config) IdentityServerByOrigin(origin string) (IdentityServer, bool) {
	if is, ok := c.IdentityServer(origin); ok {
		return is, true
	}
	for _, is := range c.IdentityServers {
		if is.SigningName == origin {
			return is, true
		}
	}
	return IdentityServer{}, false
}

// EmailEnabled reports whether validation e-mails can be sent (smtp_host is set).
func (c *Config) EmailEnabled() bool { return c.Email.SMTPHost != "" }

// MSISDNEnabled reports whether validation SMS can be sent (msisdn.webhook_url is set).
func (c *Config) MSISDNEnabled() bool { return c.MSISDN.WebhookURL != "" }

// TLSRequired reports whether mail may only be sent over TLS (STARTTLS):
// require_tls, or when unset, whether smtp_host is not a loopback host.
func (e Email) TLSRequired() bool {
	if e.RequireTLS != nil {
		return *e.RequireTLS
	}
	return !loopbackHost(e.SMTPHost)
}

// loopbackHost reports whether host is "localhost" (or a name under
// .localhost) or a loopback IP address: mail to it never leaves the machine.
// Names are not resolved.
func loopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	addr, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && addr.Unmap().IsLoopback()
}
