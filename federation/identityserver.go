package federation

import (
	"strings"

	"github.com/threepidd/threepidd/config"
)

// identityServerName is the name is signs with: signing_name, else server_name.
func identityServerName(is config.IdentityServer) string {
	if is.SigningName != "" {
		return is.SigningName
	}
	return is.ServerName
}

// identityServerURL is is's base URL without a trailing slash: base_url, else
// https://<server_name>.
func identityServerURL(is config.IdentityServer) string {
	if is.BaseURL != "" {
		return strings.TrimRight(is.BaseURL, "/")
	}
	return "https://" + is.ServerName
}
