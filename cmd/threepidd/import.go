package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/importer"
	"github.com/threepidd/threepidd/storage/backend"
)

// importThreepids copies the homeserver's existing 3PIDs into threepidd's
// store: through Synapse's admin API (homeserver.admin_token), or read-only
// from Dendrite's user database (-dendrite-db). Progress goes to stderr, the
// report (counts, conflicts, 3PIDs not imported) to stdout. Conflicts are
// reported, not errors: the exit status is 0 once the import finished, 1 if it
// could not. Running it again changes nothing.
func importThreepids(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "threepidd.yaml", "configuration file")
	dendriteDB := fs.String("dendrite-db", "", "homeserver.kind dendrite: its user API database, a SQLite file or postgres:// URL (opened read-only)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: threepidd import -config FILE [-dendrite-db DSN]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "threepidd import: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	cfg, err := config.Load(*path, os.Environ())
	if err != nil {
		return err
	}
	source, err := importer.SourceFor(cfg, *dendriteDB)
	if err != nil {
		return err
	}
	defer source.Close()
	store, err := backend.Open(ctx, cfg.Database.Driver, cfg.Database.DSN)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer store.Close()
	report, err := (&importer.Importer{Store: store, Source: source, Progress: stderr}).Run(ctx)
	if report.Source == "" {
		return err // nothing was read
	}
	if werr := report.Write(stdout); werr != nil && err == nil {
		err = fmt.Errorf("write report: %w", werr)
	}
	return err
}
