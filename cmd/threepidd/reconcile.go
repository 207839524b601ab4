package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/server"
)

// reconcileCommand runs a reconcile pass now (package reconcile): every
// Synapse account compared with threepidd's store, what is repairable
// repaired, conflicts reported. It continues a pass an earlier run (or a
// serving instance) left unfinished. Progress goes to stderr, the report
// (counts, each conflict by user ID) to stdout. The exit status is 0 once the
// pass finished, 1 if it could not (the next run continues where it stopped)
// or another instance is running it.
func reconcileCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "threepidd.yaml", "configuration file")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: threepidd reconcile -config FILE")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "threepidd reconcile: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	cfg, err := config.Load(*path, os.Environ())
	if err != nil {
		return err
	}
	if !cfg.SynapseAdmin() {
		return errors.New("reconcile needs Synapse's admin API: homeserver.kind synapse and homeserver.admin_token")
	}
	srv, err := server.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	r := srv.Reconciler
	r.Progress = stderr
	report, err := r.Run(ctx, true)
	if report.Users > 0 || err == nil {
		if werr := report.Write(stdout); werr != nil && err == nil {
			err = fmt.Errorf("write report: %w", werr)
		}
	}
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("interrupted; the next run continues where this one stopped: %w", err)
	}
	return err
}
