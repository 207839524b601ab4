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
// could not. It holds a page of accounts in memory at a time; interrupted,
// running it again continues where it stopped; finished, running it again
// changes nothing.
func importThreepids(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newConfigCommand("import", "usage: threepidd import -config FILE [-dendrite-db DSN]", stderr)
	dendriteDB := cmd.flags.String("dendrite-db", "", "homeserver.kind dendrite: its user API database, a SQLite file or postgres:// URL (opened read-only)")
	cfg, err := cmd.load(args)
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

// configCommand is the command line of a subcommand that works on the
// configuration file of a serving instance (import, reconcile).
type configCommand struct {
	name   string
	flags  *flag.FlagSet
	path   *string
	stderr io.Writer
}

// newConfigCommand returns the flags of subcommand name, -config among them;
// the caller may add its own before load.
func newConfigCommand(name, usage string, stderr io.Writer) *configCommand {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &configCommand{name: name, flags: fs, path: fs.String("config", "threepidd.yaml", "configuration file"), stderr: stderr}
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), usage)
		fs.PrintDefaults()
	}
	return c
}

// load parses args (no positional arguments), sends warnings and worse to
// stderr, and loads the configuration with the environment's overrides.
func (c *configCommand) load(args []string) (*config.Config, error) {
	if err := c.flags.Parse(args); err != nil {
		return nil, errUsage
	}
	if c.flags.NArg() > 0 {
		fmt.Fprintf(c.stderr, "threepidd %s: unexpected argument %q\n", c.name, c.flags.Arg(0))
		c.flags.Usage()
		return nil, errUsage
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	return config.Load(*c.path, os.Environ())
}
