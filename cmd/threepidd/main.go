// Command threepidd serves the 3PID endpoints of a Matrix homeserver.
//
//	threepidd -config threepidd.yaml          serve
//	threepidd generate-key -out signing.key   write an ed25519 signing key
//	threepidd notify ...                      send a signed onupdate
//	threepidd import -config threepidd.yaml   import the homeserver's 3PIDs
//	threepidd reconcile -config threepidd.yaml  compare with Synapse, repair
//	threepidd demo                            a guided tour
//
// Run "threepidd help" for every subcommand.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/internal/requestid"
	"github.com/threepidd/threepidd/server"
)

const usage = `usage: threepidd [command] [flags]

  serve -config FILE           serve the 3PID endpoints (the default command;
                               -config defaults to threepidd.yaml)
  generate-key -out FILE [-format synapse|dendrite] [-id ID]
                               write a new ed25519 signing key (Synapse's
                               "ed25519 <id> <seed>" by default)
  notify -key FILE -origin IS -destination HS -to URL -threepid ADDR
         (-mxid MXID | -deleted [-mxid MXID]) [-medium email|msisdn]
                               send a signed onupdate, as an identity server would
  import -config FILE [-dendrite-db DSN]
                               copy the homeserver's existing 3PIDs into threepidd
  reconcile -config FILE       compare every Synapse account with threepidd now:
                               import, write back, clean up deactivations,
                               report conflicts
  demo [-listen ADDR] [-v]     walk through the whole story against in-process stand-ins
  help                         this text

Every configuration key has an environment override: THREEPIDD_ + its
upper-cased path joined by "_" (THREEPIDD_DATABASE_DSN).
Run "threepidd COMMAND -h" for a command's flags.
`

// errUsage marks a command-line mistake (exit status 2).
var errUsage = errors.New("usage")

// commands are the subcommands; the default (no subcommand) serves.
var commands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"serve":        serve,
	"generate-key": generateKey,
	"notify":       notify,
	"import":       importThreepids,
	"reconcile":    reconcileCommand,
	"demo":         runDemo,
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	name := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	if name == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "threepidd: unknown command %q (try: threepidd help)\n", name)
		return 2
	}
	if err := cmd(ctx, args, stdout, stderr); err != nil {
		if errors.Is(err, errUsage) || errors.Is(err, flag.ErrHelp) {
			return 2
		}
		fmt.Fprintf(stderr, "threepidd %s: %s\n", name, oneLine(err))
		return 1
	}
	return 0
}

// oneLine renders err on one line: some libraries (pgx, listing each address
// it tried) put newlines in their errors, and operators grep logs by line.
func oneLine(err error) string {
	var b strings.Builder
	for i, line := range strings.FieldsFunc(err.Error(), func(r rune) bool { return r == '\n' || r == '\r' }) {
		if i > 0 && !strings.HasSuffix(b.String(), ":") {
			b.WriteString(";")
		}
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(strings.TrimSpace(line))
	}
	return b.String()
}

func serve(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "threepidd.yaml", "configuration file")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage, "\nserve flags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	cfg, err := config.Load(*path, os.Environ())
	if err != nil {
		return err
	}
	slog.SetDefault(newLogger(stderr, cfg.Log))
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	serveErr := srv.Serve(ctx)
	slog.Info("threepidd stopping")
	if err := srv.Shutdown(); err != nil {
		slog.Warn("shutdown", "err", err)
	}
	return serveErr
}

// newLogger returns the logger of log (format and level, validated by
// config): slog's text or JSON handler on w, each record written with a
// request's context carrying its request ID.
func newLogger(w io.Writer, log config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(log.Level))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if log.Format == config.LogJSON {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(requestid.NewLogHandler(h))
}
