package threepid

import (
	"strings"
	"testing"
)

func TestValidClientSecretAndSID(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"a", true},
		{"Abc.123=_-", true},
		{strings.Repeat("x", 255), true},
		{strings.Repeat("x", 256), false},
		{"", false},
		{"has space", false},
		{"slash/", false},
		{"plus+", false},
		{"unicodé", false},
		{"nul\x00", false},
	}
	for _, tc := range tests {
		if got := ValidClientSecret(tc.in); got != tc.want {
			t.Errorf("ValidClientSecret(%q) = %v, want %v", tc.in, got, tc.want)
		}
		if got := ValidSID(tc.in); got != tc.want {
			t.Errorf("ValidSID(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestValidUserID(t *testing.T) {
	long := "@" + strings.Repeat("a", 254-len(":example.org")) + ":example.org"
	tests := []struct {
		in   string
		want bool
	}{
		{"@alice:example.org", true},
		{"@alice:example.org:8448", true},
		{"@alice:127.0.0.1", true},
		{"@alice:[::1]", true},
		{"@alice:[2001:db8::1]:8448", true},
		{"@Alice.Historic!#$%&'()*+,/;<=>?[]^`{|}~:example.org", true},
		{long, true},
		{long + "a", false},
		{"alice:example.org", false},
		{"@:example.org", false},
		{"@alice", false},
		{"@alice:", false},
		{"@ali ce:example.org", false},
		{"@ali\tce:example.org", false},
		{"@ali\x7fce:example.org", false},
		{"@alicé:example.org", false},
		{"@alice:exa mple.org", false},
		{"@alice:example.org:", false},
		{"@alice:example.org:123456", false},
		{"@alice:example.org:65536", false},
		{"@alice:example_org", false},
		{"@alice:[::1", false},
		{"@alice:[example.org]", false},
		{"@alice:[fe80::1%eth0]", false},
		{"@alice:[::1]x", false},
		{"@alice:::1", false},
	}
	for _, tc := range tests {
		if got := ValidUserID(tc.in); got != tc.want {
			t.Errorf("ValidUserID(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestUserServerName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"@alice:example.org", "example.org"},
		{"@alice:example.org:8448", "example.org:8448"},
		{"@alice:[::1]:8448", "[::1]:8448"},
		{"alice:example.org", ""},
		{"@alice", ""},
		{"", ""},
	}
	for _, tc := range tests {
		if got := UserServerName(tc.in); got != tc.want {
			t.Errorf("UserServerName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestValidServerName(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"example.org", true},
		{"localhost", true},
		{"localhost:8008", true},
		{"1.2.3.4:1", true},
		{"[::1]", true},
		{"[::ffff:1.2.3.4]:65535", true},
		{"", false},
		{":8448", false},
		{"example.org:", false},
		{"example.org:0x1", false},
		{"[]", false},
		{"[::1]:", false},
		{strings.Repeat("a", 256), false},
	}
	for _, tc := range tests {
		if got := ValidServerName(tc.in); got != tc.want {
			t.Errorf("ValidServerName(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestValidNextLink(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"https://app.element.io/#/home", true},
		{"http://127.0.0.1:8080/done?x=1", true},
		{"HTTPS://Example.org", true},
		{"javascript:alert(1)", false},
		{"ftp://example.org/", false},
		{"//example.org/path", false},
		{"/relative", false},
		{"https://", false},
		{"https://:443/", false},
		{"https:example.org", false},
		{"http://exa mple.org/", false},
		{"", false},
		{"https://[2001:db8::1]:8443/done", true},
		{"https://user:pw@app.example/", true},
		{"https://192.0.2.1/", true},
		{`https://evil.example\@app.example/`, false},
		{`https:\\evil.example/`, false},
		{"https://[fe80::1%25eth0]/", false},
		{"https://app.example;script-src */", false},
		{"https://app.exa_mple/", false},
		{"https://bücher.example/", false},
		{"https://app.example:99999/", false},
	}
	for _, tc := range tests {
		if got := ValidNextLink(tc.in); got != tc.want {
			t.Errorf("ValidNextLink(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestNextLinkAllowed: Synapse's next_link_domain_whitelist semantics (its
// test_next_link_domain_whitelist and test_empty_next_link_domain_whitelist,
// and urlparse's hostname: lower case, no port, no brackets, no userinfo).
func TestNextLinkAllowed(t *testing.T) {
	allowed := []string{"example.com", "example.org", "2001:db8::1"}
	tests := []struct {
		link    string
		allowed []string
		want    bool
	}{
		{"https://example.com/a/good/site", nil, true},
		{"https://anything.example/", nil, true},
		{"javascript:alert(1)", nil, false},
		{"file:///host/path", nil, false},
		{"https://example.com/some/good/page", allowed, true},
		{"https://example.org/some/also/good/page", allowed, true},
		{"https://bad.example.org/some/bad/page", allowed, false},
		{"https://EXAMPLE.com:8443/page", allowed, true},
		{"http://user@example.org/", allowed, true},
		{"https://example.com@evil.example/", allowed, false},
		{"https://example.com.evil.example/", allowed, false},
		{"https://[2001:DB8::1]:443/", allowed, true},
		{"https://[2001:db8:0::1]/", allowed, false}, // compared as written, as Synapse does
		{"https://example.com./", allowed, false},
		{"https://example.com/a/page", []string{}, false},
	}
	for _, tc := range tests {
		if got := NextLinkAllowed(tc.link, tc.allowed); got != tc.want {
			t.Errorf("NextLinkAllowed(%q, %q) = %v, want %v", tc.link, tc.allowed, got, tc.want)
		}
	}
}

func TestNextLinkOrigin(t *testing.T) {
	for _, tc := range []struct{ link, want string }{
		{"https://App.Example/done?x=1#y", "https://app.example"},
		{"HTTP://app.example:8080/", "http://app.example:8080"},
		{"https://u:p@[2001:DB8::1]:8443/x", "https://[2001:db8::1]:8443"},
		{"javascript:alert(1)", ""},
	} {
		if got, _ := NextLinkOrigin(tc.link); got != tc.want {
			t.Errorf("NextLinkOrigin(%q) = %q, want %q", tc.link, got, tc.want)
		}
	}
}
