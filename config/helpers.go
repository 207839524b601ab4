package config

import "strings"

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

// SynapseAdmin reports whether threepidd can use Synapse's admin API: kind
// synapse with homeserver.admin_token set. It carries the in-use check against
// the homeserver's table, the read-through import and the reconcile pass.
func (c *Config) SynapseAdmin() bool {
	return c.Homeserver.Kind == KindSynapse && c.Homeserver.AdminToken != ""
}

// ThreepidChanges reports whether a client can add a 3PID: at least one
// medium can be validated (m.3pid_changes).
func (c *Config) ThreepidChanges() bool { return c.EmailEnabled() || c.MSISDNEnabled() }
