package config

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
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

// CertPool returns the system's root certificates plus those of ca_files
// (nil when ca_files is empty: the system's alone).
func (o Outbound) CertPool() (*x509.CertPool, error) {
	if len(o.CAFiles) == 0 {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, path := range o.CAFiles {
		certs, err := loadCertificates(path)
		if err != nil {
			return nil, fmt.Errorf("outbound.ca_files: %w", err)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	return pool, nil
}

// loadCertificates reads the PEM certificates of a file; a file without one is
// an error.
func loadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return certs, nil
}

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

// SynapseAdmin reports whether threepidd can use Synapse's admin API: kind
// synapse with homeserver.admin_token set. It carries the in-use check against
// the homeserver's table, the read-through import and the reconcile pass.
func (c *Config) SynapseAdmin() bool {
	return c.Homeserver.Kind == KindSynapse && c.Homeserver.AdminToken != ""
}

// ThreepidChanges reports whether a client can add a 3PID: at least one
// medium can be validated (m.3pid_changes).
func (c *Config) ThreepidChanges() bool { return c.EmailEnabled() || c.MSISDNEnabled() }
