package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/threepidd/threepidd/federation/signingkey"
)

// generateKey writes a new ed25519 signing key in Synapse's format (default) or
// Dendrite's PEM format.
func generateKey(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("generate-key", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "file to write (must not exist)")
	format := fs.String("format", "synapse", "synapse | dendrite")
	id := fs.String("id", "", "key id without the ed25519: prefix (random if empty)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: threepidd generate-key -out FILE [-format synapse|dendrite] [-id ID]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *out == "" || (*format != "synapse" && *format != "dendrite") {
		fs.Usage()
		return errUsage
	}
	key, err := signingkey.Generate(*id)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	if *format == "dendrite" {
		err = key.WriteDendrite(f)
	} else {
		err = key.WriteSynapse(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s (%s, public key %s)\n", *out, key.ID, key.PublicBase64())
	return nil
}
