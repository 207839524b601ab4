package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/onupdate"
)

// notify sends one signed POST /_matrix/federation/v1/3pid/onupdate as an
// identity server would, with the signed ts of now: to try a deployment, or
// to tell a homeserver by hand that a binding was taken over or deleted. A non-2xx answer is an error that
// carries the Matrix errcode and message (exit status 1).
func notify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("notify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyPath := fs.String("key", "", "the identity server's signing key (Synapse or Dendrite format)")
	origin := fs.String("origin", "", "the identity server's name, as the homeserver configures it")
	destination := fs.String("destination", "", "the homeserver's server_name")
	to := fs.String("to", "", "base URL of threepidd (or of the homeserver routing onupdate to it)")
	address := fs.String("threepid", "", "the 3PID: an e-mail address or a phone number")
	mxid := fs.String("mxid", "", "the user the 3PID is now bound to; with -deleted, the user it was bound to (optional)")
	deleted := fs.Bool("deleted", false, "the binding was deleted rather than taken over")
	medium := fs.String("medium", "", "email or msisdn (inferred by the receiver when empty)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: threepidd notify -key FILE -origin IS_NAME -destination HS_SERVER_NAME -to URL -threepid ADDRESS (-mxid MXID | -deleted [-mxid MXID]) [-medium email|msisdn]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	required := []struct{ name, value string }{
		{"key", *keyPath}, {"origin", *origin}, {"destination", *destination}, {"to", *to}, {"threepid", *address},
	}
	if !*deleted {
		required = append(required, struct{ name, value string }{"mxid", *mxid})
	}
	for _, r := range required {
		if r.value == "" {
			fmt.Fprintf(stderr, "threepidd notify: -%s is required\n", r.name)
			fs.Usage()
			return errUsage
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "threepidd notify: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	key, err := signingkey.Load(*keyPath)
	if err != nil {
		return fmt.Errorf("load -key: %w", err)
	}
	// ts tells a genuine repeat from a replay (docs/onupdate-ts.md).
	u := onupdate.Body{Threepid: *address, Medium: *medium, Deleted: *deleted, MXID: *mxid, TS: time.Now().UnixMilli()}
	if err := onupdate.Send(ctx, nil, key, *origin, *destination, *to, u); err != nil {
		return err
	}
	what := "taken over by " + u.MXID
	if u.Deleted {
		what = "deleted"
	}
	fmt.Fprintf(stdout, "%s accepted: %s %s\n", *to, u.Threepid, what)
	return nil
}
