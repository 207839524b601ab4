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
	}
	for _, tc := range tests {
		if got := ValidNextLink(tc.in); got != tc.want {
			t.Errorf("ValidNextLink(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
