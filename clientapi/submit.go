package clientapi

import (
	"errors"
	"html/template"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/threepidd/threepidd/httpapi"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/threepid"
)

// The submit_token endpoints. A validation link (GET, what a mail holds)
// opens a page that asks the person to confirm and validates nothing, so
// that a mail scanner pre-fetching links validates no address; its button
// POSTs the same three values, form-encoded, which validates and redirects
// to next_link. A JSON POST is the clients' submit_token (the SMS code).

type submitBody struct {
	SID          *string `json:"sid"`
	ClientSecret *string `json:"client_secret"`
	Token        *string `json:"token"`
}

// formContentType is how a browser sends a form.
const formContentType = "application/x-www-form-urlencoded"

// submit serves a POST: the form of the link's page (an HTML answer), or a
// client's JSON body (a JSON answer).
func (a *Account) submit(medium string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mediaType == formContentType {
			a.submitForm(w, r, medium)
			return
		}
		mxerr.Handler(a.submitJSON(medium)).ServeHTTP(w, r)
	})
}

func (a *Account) submitJSON(medium string) mxerr.Handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		var b submitBody
		if err := httpapi.DecodeJSON(r, &b); err != nil {
			return err
		}
		if err := mxerr.Required("sid", b.SID != nil, "client_secret", b.ClientSecret != nil, "token", b.Token != nil); err != nil {
			return err
		}
		if _, err := a.Service.SubmitToken(r.Context(), medium, *b.SID, *b.ClientSecret, strings.TrimSpace(*b.Token)); err != nil {
			return err
		}
		mxerr.WriteJSON(w, http.StatusOK, map[string]bool{"success": true})
		return nil
	}
}

// submitForm validates the session of the form the link's page holds, then
// redirects to next_link, or shows that the address is confirmed.
func (a *Account) submitForm(w http.ResponseWriter, r *http.Request, medium string) {
	f, err := decodeSubmitForm(r)
	if err == nil {
		var next string
		if next, err = a.Service.SubmitToken(r.Context(), medium, f.Get("sid"), f.Get("client_secret"), strings.TrimSpace(f.Get("token"))); err == nil && next != "" {
			noStore(w)
			http.Redirect(w, r, next, http.StatusFound)
			return
		}
	}
	a.showResult(w, r, medium, "", err)
}

// decodeSubmitForm reads a form body (at most httpapi.MaxBodyBytes) that
// holds sid, client_secret and token, each once.
func decodeSubmitForm(r *http.Request) (url.Values, error) {
	body, err := httpapi.ReadBody(r, httpapi.MaxBodyBytes)
	if err != nil {
		return nil, err
	}
	f, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, mxerr.InvalidParam.WithMessage("The form could not be read")
	}
	for _, name := range []string{"sid", "client_secret", "token"} {
		if len(f[name]) != 1 {
			return nil, mxerr.MissingParam.WithMessage("The form must hold %s once", name)
		}
	}
	return f, nil
}

// linkPage serves a validation link: the page that asks the person to
// confirm (or says the address is confirmed already). A link of a session
// it does not know shows the failure page.
func (a *Account) linkPage(medium string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		s, err := a.Service.OpenLink(r.Context(), medium, q.Get("sid"), q.Get("client_secret"))
		if err != nil || s.Validated {
			a.showResult(w, r, medium, s.NextLink, err)
			return
		}
		page := pageData{Medium: medium, Title: confirmTitle(medium), Address: display(s.Medium, s.Address),
			SID: q.Get("sid"), ClientSecret: q.Get("client_secret"), Token: q.Get("token")}
		formAction := "'self'"
		if origin, ok := threepid.NextLinkOrigin(s.NextLink); ok {
			// The form's answer redirects there, and browsers hold the
			// redirect of a form to form-action.
			formAction += " " + origin
		}
		writePage(w, http.StatusOK, "form-action "+formAction, page)
	})
}

// showResult shows the outcome of a validation: confirmed (with a link on to
// next, if any), or the failure err describes.
func (a *Account) showResult(w http.ResponseWriter, r *http.Request, medium, next string, err error) {
	if err == nil {
		writePage(w, http.StatusOK, "form-action 'none'", pageData{Medium: medium, Title: "Address confirmed",
			Text: "Your address has been confirmed. You can return to your Matrix client and continue.", NextLink: next})
		return
	}
	var me *mxerr.Error
	if !errors.As(err, &me) {
		slog.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		me = mxerr.Unknown.WithMessage("Something went wrong; try again later")
	}
	writePage(w, me.Status, "form-action 'none'", pageData{Medium: medium, Title: "Confirmation failed", Text: me.Message + "."})
}

// confirmTitle is the heading of the confirmation page of medium.
func confirmTitle(medium string) string {
	if medium == threepid.MediumMSISDN {
		return "Confirm your phone number"
	}
	return "Confirm your e-mail address"
}

// display is an address as a person reads it.
func display(medium, address string) string {
	if medium == threepid.MediumMSISDN {
		return threepid.InternationalFormat(address)
	}
	return address
}

// pageData is what submitPage shows: a form when SID is set, else Text.
type pageData struct {
	Medium, Title, Text, Address string
	SID, ClientSecret, Token     string
	// NextLink, on a result page, is where the person may go on.
	NextLink string
}

var submitPage = template.Must(template.New("submit").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title></head>
<body><h1>{{.Title}}</h1>
{{- if .SID}}
<p>Someone asked to add {{if eq .Medium "email"}}the e-mail address{{else}}the phone number{{end}} <strong>{{.Address}}</strong> to a Matrix account.</p>
<p>If that was you, confirm it. If not, close this page: nothing will change.</p>
<form method="post" action="submit_token">
<input type="hidden" name="sid" value="{{.SID}}">
<input type="hidden" name="client_secret" value="{{.ClientSecret}}">
<input type="hidden" name="token" value="{{.Token}}">
<button type="submit">Confirm</button>
</form>
{{- else}}
<p>{{.Text}}</p>
{{- if .NextLink}}
<p><a href="{{.NextLink}}">Continue</a></p>
{{- end}}
{{- end}}
</body></html>
`))

// writePage writes the page with status, under a Content-Security-Policy
// that allows nothing but formAction (no script, style or frame, nothing
// loaded); neither cached nor sent as a Referer (its URL holds the token).
func writePage(w http.ResponseWriter, status int, formAction string, page pageData) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; "+formAction+"; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	noStore(w)
	w.WriteHeader(status)
	if err := submitPage.Execute(w, page); err != nil {
		slog.Warn("write validation page", "err", err)
	}
}

// noStore keeps an answer about a validation out of every cache.
func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
}
