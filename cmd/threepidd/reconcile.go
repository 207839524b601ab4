package main

import (
	"context"
	"errors"
	"fmt"
	"io"

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
	cfg, err := newConfigCommand("reconcile", "usage: threepidd reconcile -config FILE", stderr).load(args)
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
