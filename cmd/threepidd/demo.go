package main

import (
	"context"
	"flag"
	"fmt"
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
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: threepidd demo [-listen ADDR] [-v]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	handler := slog.DiscardHandler // the story is on stdout; logs would cut into it
	if *verbose {
		handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})
	}
	slog.SetDefault(slog.New(handler))
	opts := demo.Options{Listen: *listen}
	if interactive(os.Stdin) {
		opts.Stdin = os.Stdin
	}
	return demo.Run(ctx, stdout, opts)
}

// interactive reports whether f is input a person types into, so that Enter
// may stop the demo. Piped input, a file and /dev/null (a character device too,
// as under nohup or a service manager) must not end it early.
func interactive(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(fi, null)
}
