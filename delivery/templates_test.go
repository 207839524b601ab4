package delivery

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
)

var sampleMail = ValidationMail{ServerName: "hs.test", Address: "a&b@example.org",
	Link: "https://hs.test/submit?token=t&sid=s", ValidFor: "1 hour"}

// TestBuiltInTemplates: both bodies carry the server name, the address and
// the link; the HTML one escapes them for HTML.
func TestBuiltInTemplates(t *testing.T) {
	m, err := DefaultTemplates().Validation(sampleMail)
	if err != nil {
		t.Fatal(err)
	}
	if m.To != sampleMail.Address || m.Subject != "[hs.test] Confirm your e-mail address" {
		t.Errorf("To %q Subject %q", m.To, m.Subject)
	}
	for _, want := range []string{"hs.test", "a&b@example.org", "https://hs.test/submit?token=t&sid=s", "1 hour"} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("text lacks %q:\n%s", want, m.Text)
		}
	}
	for _, want := range []string{"hs.test", "a&amp;b@example.org", `href="https://hs.test/submit?token=t&amp;sid=s"`, "1 hour"} {
		if !strings.Contains(m.HTML, want) {
			t.Errorf("HTML lacks %q:\n%s", want, m.HTML)
		}
	}
}

// TestTemplateOverrides: a file in email.template_dir replaces its built-in
// template (the other stays built in); a mistake is an error naming the key.
func TestTemplateOverrides(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(TextTemplate, "Confirm {{.Address}} for {{.ServerName}}: {{.Link}}\n")
	tpl, err := LoadTemplates(config.Email{TemplateDir: dir, Subject: "{{.ServerName}}:\n {{.Address}}"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := tpl.Validation(sampleMail)
	if err != nil {
		t.Fatal(err)
	}
	if m.Text != "Confirm a&b@example.org for hs.test: https://hs.test/submit?token=t&sid=s\n" {
		t.Errorf("text %q", m.Text)
	}
	if m.Subject != "hs.test: a&b@example.org" {
		t.Errorf("subject %q: want one line", m.Subject)
	}
	if !strings.Contains(m.HTML, "a&amp;b@example.org") {
		t.Errorf("the HTML is not the built-in one: %s", m.HTML)
	}

	for _, tc := range []struct {
		name, file, text, subject, want string
	}{
		{"text syntax", TextTemplate, "{{.Link", "s", "email.template_dir: template: validation.txt:1: unclosed action"},
		{"unknown field", HTMLTemplate, "<p>{{.Token}}</p>", "s", "email.template_dir: template: validation.html:1:5: executing"},
		{"subject syntax", "", "", "{{if}}", "email.subject: template: email.subject:1: missing value for if"},
		{"subject unknown field", "", "", "{{.Secret}}", "email.subject: template: email.subject:1:2: executing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.file != "" {
				if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.text), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := LoadTemplates(config.Email{TemplateDir: dir, Subject: tc.subject})
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("LoadTemplates: %v, want an error starting %q", err, tc.want)
			}
		})
	}
}

func TestDurationInWords(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Hour:        "1 hour",
		2 * time.Hour:    "2 hours",
		15 * time.Minute: "15 minutes",
		time.Minute:      "1 minute",
		90 * time.Minute: "90 minutes",
		90 * time.Second: "90 seconds",
		time.Second:      "1 second",
	} {
		if got := DurationInWords(d); got != want {
			t.Errorf("DurationInWords(%v) = %q, want %q", d, got, want)
		}
	}
}
