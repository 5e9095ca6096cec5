// Command taskq runs and measures the task queue.
//
//	taskq migrate [up|down|status]   apply the embedded migrations (dbmate, locked)
//	taskq work                       run a worker pool against the database
//	taskq loadtest                   the plan's load test, before and after, side by side
//	taskq stats                      the plan's "How to measure" queries, as tables
//	taskq localpg stop               stop and delete the throwaway local cluster
//
// The database is DATABASE_URL (or --database-url). Without one, taskq uses
// the "taskq" database on the PostgreSQL at 127.0.0.1:5432, creating it if
// needed, or on a throwaway cluster it starts from the installed binaries
// when nothing listens there.
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
)

const usage = `taskq runs and measures the task queue.

Usage:
  taskq migrate [up|down|status]   apply or roll back the embedded migrations
  taskq work                       run a worker pool against the database
  taskq loadtest                   reproduce the plan's load test, before vs after
  taskq stats                      print the plan's measurements (throughput, lock waits, queue depth)
  taskq localpg stop               stop and delete the throwaway local PostgreSQL cluster

The database comes from DATABASE_URL or --database-url. Without either, taskq
uses the database "taskq" on the PostgreSQL at 127.0.0.1:5432 (created if
missing), or on a throwaway cluster started from the installed PostgreSQL
binaries when nothing listens there.

Run "taskq <command> --help" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "taskq:", err)
		}
		os.Exit(exitCode(err))
	}
}

func exitCode(err error) int {
	var usageErr usageError
	if errors.Is(err, flag.ErrHelp) || errors.As(err, &usageErr) {
		return 2
	}
	return 1
}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command given"}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "migrate":
		return migrateCmd(ctx, rest, stdout, stderr)
	case "work":
		return workCmd(ctx, rest, stdout, stderr)
	case "loadtest":
		return loadtestCmd(ctx, rest, stdout, stderr)
	case "stats":
		return statsCmd(ctx, rest, stdout, stderr)
	case "localpg":
		return localpgCmd(ctx, rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

// newFlags returns a flag set whose --help prints the command's synopsis
// and every flag.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("taskq "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "%s\n\nFlags:\n", strings.TrimSpace(synopsis))
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args, turning a bad flag into a usageError (the flag package
// has already printed what was wrong and the usage).
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	return nil
}

func databaseFlag(fs *flag.FlagSet) *string {
	return fs.String("database-url", os.Getenv("DATABASE_URL"),
		"PostgreSQL URL (env DATABASE_URL); empty: the local server's \"taskq\" database")
}

func newLogger(stderr io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
}

// isTerminal tells whether w is an interactive terminal, for live lines.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
