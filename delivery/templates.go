package delivery

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	texttemplate "text/template"
	"time"

	"github.com/threepidd/threepidd/config"
)

// Template files of validation mails: built in, each replaced by the file of
// that name in email.template_dir when there is one.
const (
	// TextTemplate is the plain-text body, a text/template.
	TextTemplate = "validation.txt"
	// HTMLTemplate is the HTML body, an html/template (which escapes what it
	// inserts for the place it is inserted in).
	HTMLTemplate = "validation.html"
)

//go:embed templates
var builtIn embed.FS

// ValidationMail is what the templates of a validation mail (and the
// email.subject template) get.
type ValidationMail struct {
	// ServerName is the homeserver's server_name.
	ServerName string
	// Address is the e-mail address being validated.
	Address string
	// Link is the validation link.
	Link string
	// ValidFor is how long the link works, in words ("1 hour").
	ValidFor string
}

// Templates render validation mails.
type Templates struct {
	subject *texttemplate.Template
	text    *texttemplate.Template
	html    *htmltemplate.Template
}

// LoadTemplates parses the templates cfg names: the subject (email.subject)
// and the bodies, built in or from email.template_dir, and renders them once
// with sample data, so that a mistake stops the start. Errors name the key.
func LoadTemplates(cfg config.Email) (*Templates, error) {
	subject, err := texttemplate.New("email.subject").Option("missingkey=error").Parse(cfg.Subject)
	if err != nil {
		return nil, fmt.Errorf("email.subject: %w", err)
	}
	text, err := readTemplate(cfg.TemplateDir, TextTemplate)
	if err != nil {
		return nil, err
	}
	html, err := readTemplate(cfg.TemplateDir, HTMLTemplate)
	if err != nil {
		return nil, err
	}
	t := &Templates{subject: subject}
	if t.text, err = texttemplate.New(TextTemplate).Parse(text); err != nil {
		return nil, fmt.Errorf("email.template_dir: %w", err)
	}
	if t.html, err = htmltemplate.New(HTMLTemplate).Parse(html); err != nil {
		return nil, fmt.Errorf("email.template_dir: %w", err)
	}
	sample := ValidationMail{ServerName: "example.org", Address: "alice@example.org",
		Link: "https://matrix.example.org/_matrix/client/unstable/add_threepid/email/submit_token?token=t&client_secret=c&sid=s", ValidFor: "1 hour"}
	if _, err := t.Validation(sample); err != nil {
		return nil, err
	}
	return t, nil
}

// readTemplate returns the template file name: from dir when it is there,
// else the built-in one.
func readTemplate(dir, name string) (string, error) {
	if dir != "" {
		data, err := os.ReadFile(filepath.Join(dir, name))
		switch {
		case err == nil:
			return string(data), nil
		case !errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("email.template_dir: %w", err)
		}
	}
	data, err := builtIn.ReadFile("templates/" + name)
	if err != nil {
		return "", fmt.Errorf("built-in template %s: %w", name, err)
	}
	return string(data), nil
}

// DefaultTemplates are the built-in templates with the default subject.
var DefaultTemplates = sync.OnceValue(func() *Templates {
	t, err := LoadTemplates(config.Email{Subject: config.DefaultEmailSubject})
	if err != nil {
		panic(fmt.Sprintf("delivery: built-in templates: %v", err))
	}
	return t
})

// Validation renders the validation mail to data.Address.
func (t *Templates) Validation(data ValidationMail) (Message, error) {
	var subject, text, html bytes.Buffer
	if err := t.subject.Execute(&subject, data); err != nil {
		return Message{}, fmt.Errorf("email.subject: %w", err)
	}
	if err := t.text.Execute(&text, data); err != nil {
		return Message{}, fmt.Errorf("email.template_dir: %w", err)
	}
	if err := t.html.Execute(&html, data); err != nil {
		return Message{}, fmt.Errorf("email.template_dir: %w", err)
	}
	return Message{
		To: data.Address,
		// A subject is one line: a template spanning lines would otherwise
		// fold into the headers.
		Subject: strings.Join(strings.Fields(subject.String()), " "),
		Text:    text.String(),
		HTML:    html.String(),
	}, nil
}

// DurationInWords says d in words, as ValidFor does: "1 hour", "15 minutes", "90 seconds".
func DurationInWords(d time.Duration) string {
	unit := func(n int64, name string) string {
		if n == 1 {
			return "1 " + name
		}
		return fmt.Sprintf("%d %ss", n, name)
	}
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return unit(int64(d/time.Hour), "hour")
	case d >= time.Minute && d%time.Minute == 0:
		return unit(int64(d/time.Minute), "minute")
	default:
		return unit(int64(d.Round(time.Second)/time.Second), "second")
	}
}
