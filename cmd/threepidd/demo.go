package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"

	"github.com/threepidd/threepidd/demo"
)

// runDemo is `threepidd demo`: the newcomer's walk through threepidd, with
// stand-ins for its peers, then the service left running until Ctrl-C.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address threepidd listens on (port 0: a free one)")
	verbose := fs.Bool("v", false, "print threepidd's logs on stderr too")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	handler := slog.DiscardHandler // the story is on stdout; logs would cut into it
	if *verbose {
		handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})
	}
	slog.SetDefault(slog.New(handler))
	opts := demo.Options{Listen: *listen}
	// Enter stops the demo when a person is at the terminal; piped or
	// closed input must not end it early.
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		opts.Stdin = os.Stdin
	}
	return demo.Run(ctx, stdout, opts)
}
