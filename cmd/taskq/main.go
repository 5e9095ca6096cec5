// Command taskq runs, operates and measures the task queue.
//
//	taskq migrate [up|down|status]   apply the embedded migrations (dbmate, locked)
//	taskq work                       run a worker pool against the database
//	taskq job create|enqueue|list|show|pause|resume|cancel
//	taskq stats                      the plan's "How to measure" queries, as tables
//	taskq loadtest                   the plan's load test, before and after, side by side
//	taskq localpg stop               stop and delete the throwaway local cluster
//
// The database is --database-url, else DATABASE_URL, else libpq's
// environment (PGHOST, PGDATABASE, ...) and defaults, as for psql. Each
// command says which server and database it uses; no output shows a
// password. See usage for the exit statuses.
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
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/blue-banded-bee/taskq/migrate"
)

const usage = `taskq runs, operates and measures the task queue.

Usage: taskq <command> [arguments and flags, in any order]

Commands:
  migrate [up|down|status]   apply, roll back or list the embedded migrations
  work                       run a worker pool against the database
  job create                 create a job: domain, concurrency, max pages, find links
  job enqueue JOB [PAGE...]  add pages: arguments, a file, standard input or a sitemap
  job list                   jobs with their progress
  job show JOB               one job: settings, progress, times
  job pause|resume|cancel JOB
  stats                      throughput, lock waits and queue depth
  loadtest                   reproduce the plan's load test, before vs after
  localpg stop               stop and delete the throwaway local PostgreSQL cluster
  version                    this binary's version and schema (also --version)

The database is --database-url, else DATABASE_URL, else what libpq's
environment says (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSERVICE,
~/.pgpass, ...) with libpq's defaults, as for psql. Each command says on one
line (on standard error) which server and database it uses. No output shows
a password.

Exit status:
  0  done
  1  failed: the database could not be reached, refused the request, or is
     not migrated (or migrated ahead of this binary)
  2  the command line was wrong; nothing was done
  3  migrate status: migrations are pending
  4  no such job
  5  the job's status does not allow it (pausing a job that is not running,
     enqueueing into a cancelled one), or a job with that id exists already

Run "taskq <command> --help" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// cli runs a command line as main does and returns its exit status, having
// printed any error to stderr.
func cli(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := run(ctx, args, stdin, stdout, stderr)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stderr, "taskq:", redact(err.Error()))
	}
	return exitCode(err)
}

// Exit statuses other than 0, 1 and 2 (see usage).
const (
	exitPending    = 3
	exitNoJob      = 4
	exitJobRefused = 5
)

func exitCode(err error) int {
	var usageErr usageError
	var coded exitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usageErr):
		return 2
	case errors.As(err, &coded):
		return coded.code
	}
	return 1
}

// usageError is a mistake in the command line (or in DATABASE_URL), found
// before anything was done.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// exitError is a failure with an exit status of its own.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
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
	case "job":
		return jobCmd(ctx, rest, stdin, stdout, stderr)
	case "loadtest":
		return loadtestCmd(ctx, rest, stdout, stderr)
	case "stats":
		return statsCmd(ctx, rest, stdout, stderr)
	case "localpg":
		return localpgCmd(ctx, rest, stdout, stderr)
	case "version", "-version", "--version":
		if len(rest) > 0 {
			return usageError{fmt.Sprintf("%s takes no arguments", cmd)}
		}
		fmt.Fprintln(stdout, versionLine())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

// versionLine says which build this is and which schema it expects: the
// module version and VCS revision the Go toolchain stamped into the binary.
func versionLine() string {
	version, revision, modified := "(devel)", "unknown", ""
	goVersion := ""
	if info, ok := debug.ReadBuildInfo(); ok {
		goVersion = info.GoVersion
		if info.Main.Version != "" {
			version = info.Main.Version
		}
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision" && len(s.Value) >= 12:
				revision = s.Value[:12]
			case s.Key == "vcs.revision":
				revision = s.Value
			case s.Key == "vcs.modified" && s.Value == "true":
				modified = ", modified"
			}
		}
	}
	schema := "none"
	n := 0
	if vs, err := migrate.Versions(migrate.VersionLatest); err == nil && len(vs) > 0 {
		schema, n = vs[len(vs)-1], len(vs)
	}
	return fmt.Sprintf("taskq %s (commit %s%s, %s); schema %s (%d migrations)", version, revision, modified, goVersion, schema, n)
}

// newFlags returns a flag set for a command. Its synopsis and flags are
// printed on standard output for --help, and on standard error after a
// mistake.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("taskq "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "%s\n\nFlags:\n", strings.TrimSpace(synopsis))
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args, flags anywhere among the positional arguments (after
// "--", everything is positional), and returns the positional arguments,
// between min and max of them (max < 0: any number). A bad flag or a stray
// word is a usageError, after the flag set's usage on stderr; --help prints
// it on stdout and returns flag.ErrHelp.
func parse(fs *flag.FlagSet, args []string, stdout io.Writer, min, max int) ([]string, error) {
	stderr := fs.Output()
	// The flag package prints a mistake, then calls Usage; --help only Usage.
	fs.SetOutput(io.Discard)
	usage := fs.Usage
	fs.Usage = func() {}
	defer func() { fs.SetOutput(stderr); fs.Usage = usage }()
	var positional []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			usage()
			return nil, err
		}
		if err != nil {
			// The usage, then (from cli) the mistake, which stays in view.
			// The flag package quotes a value it refuses: it may be a URL.
			usage()
			return nil, usageError{redact(err.Error())}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	if max >= 0 && len(positional) > max {
		if max == 0 {
			return nil, usageError{fmt.Sprintf("unexpected argument %q: %s takes no arguments, only flags",
				redact(positional[0]), fs.Name())}
		}
		return nil, usageError{fmt.Sprintf("unexpected argument %q: %s takes at most %d", redact(positional[max]), fs.Name(), max)}
	}
	if len(positional) < min {
		return nil, usageError{fmt.Sprintf("%s needs %d argument(s); see %s --help", fs.Name(), min, fs.Name())}
	}
	return positional, nil
}

func newLogger(stderr io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(redactingWriter{stderr}, &slog.HandlerOptions{Level: level}))
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
