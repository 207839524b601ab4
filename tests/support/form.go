package support

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/net/html"
)

// Form is an HTML form as a browser would submit it: the method, the action
// resolved against the page's URL, and the values of its named inputs.
type Form struct {
	Method string
	Action string
	Values url.Values
}

// ErrNoForm is what FindForm answers for a page without a form.
var ErrNoForm = errors.New("the page has no form")

// FindForm parses page (HTML served at pageURL) and returns its first form,
// or ErrNoForm. Like a browser, it sends the values of the named input
// elements and the name and value of the first submit button.
func FindForm(pageURL string, page []byte) (Form, error) {
	base, err := url.Parse(pageURL)
	if err != nil {
		return Form{}, fmt.Errorf("page URL: %w", err)
	}
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		return Form{}, fmt.Errorf("parse page: %w", err)
	}
	form := find(doc, func(n *html.Node) bool { return n.Type == html.ElementNode && n.Data == "form" })
	if form == nil {
		return Form{}, ErrNoForm
	}
	f := Form{Method: strings.ToUpper(attr(form, "method")), Values: url.Values{}}
	if f.Method == "" {
		f.Method = http.MethodGet
	}
	action, err := base.Parse(attr(form, "action"))
	if err != nil {
		return Form{}, fmt.Errorf("form action: %w", err)
	}
	f.Action = action.String()
	submitted := false
	for n := range form.Descendants() {
		if n.Type != html.ElementNode || attr(n, "name") == "" {
			continue
		}
		switch typ := strings.ToLower(attr(n, "type")); {
		case n.Data == "button" || (n.Data == "input" && typ == "submit"):
			if !submitted && (typ == "" || typ == "submit") {
				f.Values.Add(attr(n, "name"), attr(n, "value"))
				submitted = true
			}
		case n.Data == "input":
			f.Values.Add(attr(n, "name"), attr(n, "value"))
		}
	}
	return f, nil
}

// find returns the first node under n (n included) that match accepts.
func find(n *html.Node, match func(*html.Node) bool) *html.Node {
	if match(n) {
		return n
	}
	for d := range n.Descendants() {
		if match(d) {
			return d
		}
	}
	return nil
}

// attr returns the value of n's attribute key ("" if absent).
func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// Submit sends f as a browser does when its button is pressed on a page of
// origin: a POST form is sent application/x-www-form-urlencoded with an
// Origin header, a GET form as the action's query.
func (c Client) Submit(ctx context.Context, f Form, origin string) (Response, error) {
	h := http.Header{"Origin": {origin}}
	if f.Method == http.MethodGet {
		u, err := url.Parse(f.Action)
		if err != nil {
			return Response{}, fmt.Errorf("form action: %w", err)
		}
		u.RawQuery = f.Values.Encode()
		return c.Send(ctx, Request{Method: http.MethodGet, URL: u.String(), Header: h})
	}
	h.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.Send(ctx, Request{Method: f.Method, URL: f.Action, Body: f.Values.Encode(), Header: h})
}

// OpenLink opens link as a person does in a browser: it loads the page and,
// when the page holds a form, presses its button. It returns the page and the
// answer to the form (a zero Response when the page has no form).
func (c Client) OpenLink(ctx context.Context, link string) (page, submitted Response, err error) {
	page, err = c.Send(ctx, Request{Method: http.MethodGet, URL: link})
	if err != nil || !strings.HasPrefix(page.Header.Get("Content-Type"), "text/html") {
		return page, Response{}, err
	}
	f, err := FindForm(link, page.Body)
	if errors.Is(err, ErrNoForm) {
		return page, Response{}, nil
	}
	if err != nil {
		return page, Response{}, err
	}
	u, err := url.Parse(link)
	if err != nil {
		return page, Response{}, fmt.Errorf("link: %w", err)
	}
	submitted, err = c.Submit(ctx, f, u.Scheme+"://"+u.Host)
	return page, submitted, err
}

// OpenLink opens link with the default [Client].
func OpenLink(ctx context.Context, link string) (page, submitted Response, err error) {
	return Client{}.OpenLink(ctx, link)
}
