package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
)

// databaseFlag declares --database-url. Its default is empty, never
// DATABASE_URL's value, which --help would print, password and all.
func databaseFlag(fs *flag.FlagSet) *string {
	return fs.String("database-url", "",
		"PostgreSQL URL (default: $DATABASE_URL, else libpq's PG* variables and defaults, as for psql)")
}

// target is the database a command uses, and what said so.
type target struct {
	// conn is what pgx connects with: the URL or keyword/value string
	// given, or "" for libpq's environment, which pgx reads itself.
	conn   string
	config *pgconn.Config
	source string
}

// resolveTarget finds the database: the --database-url given, else
// DATABASE_URL, else libpq's environment (PGHOST, PGPORT, PGDATABASE,
// PGUSER, PGPASSWORD, PGSERVICE, ~/.pgpass, ...) and defaults, which pgx
// reads for an empty connection string exactly as libpq would.
func resolveTarget(given string) (target, error) {
	t := target{conn: given, source: "--database-url"}
	if t.conn == "" {
		t.conn, t.source = os.Getenv("DATABASE_URL"), "DATABASE_URL"
	}
	if t.conn == "" {
		t.source = "PG* environment"
	}
	cfg, err := pgconn.ParseConfig(t.conn)
	if err != nil {
		// pgx masks the password in its parse errors; redact is the backstop.
		return target{}, usageError{fmt.Sprintf("%s: %s", t.source, redact(err.Error()))}
	}
	t.config = cfg
	return t, nil
}

// String says which server, database and user, and where that came from;
// never the password: "db.example.com:5432/prod as app (from DATABASE_URL)".
func (t target) String() string {
	c := t.config
	database := c.Database
	if database == "" {
		database = c.User // the server's default, as libpq's
	}
	// A Unix socket's host is its directory: "/var/run/postgresql:5432/app".
	s := fmt.Sprintf("%s:%d/%s as %s (from %s)", c.Host, c.Port, database, c.User, t.source)
	if strings.Contains(c.Host, ":") {
		s = fmt.Sprintf("[%s]:%d/%s as %s (from %s)", c.Host, c.Port, database, c.User, t.source)
	}
	more := map[string]bool{}
	for _, f := range c.Fallbacks {
		// sslmode=prefer falls back to the same host without TLS.
		if f.Host != c.Host || f.Port != c.Port {
			more[net.JoinHostPort(f.Host, strconv.Itoa(int(f.Port)))] = true
		}
	}
	if len(more) > 0 {
		s += fmt.Sprintf(", or %d more host(s)", len(more))
	}
	return s
}

// announce says on one line which database a command uses.
func announce(stderr io.Writer, t target) {
	fmt.Fprintf(stderr, "taskq: using %s\n", t)
}

// connString is what to hand a pgx connection of its own (LISTEN): the
// string given, or the URL of libpq's environment.
func (t target) connString() string {
	if t.conn != "" {
		return t.conn
	}
	return t.environmentURL()
}

// url is the target as a postgres:// URL, for dbmate, which reads nothing
// else: the URL given, or the URL of libpq's environment.
func (t target) url(command string) (string, error) {
	switch {
	case t.conn == "":
		return t.environmentURL(), nil
	case strings.HasPrefix(t.conn, "postgres://"), strings.HasPrefix(t.conn, "postgresql://"):
		return t.conn, nil
	}
	return "", usageError{fmt.Sprintf("%s is a keyword/value string; %s needs a postgres:// URL", t.source, command)}
}

// environmentURL names the host, port, user, password and database pgx
// found in libpq's environment. TLS settings are left out: pgx and lib/pq
// (dbmate's driver) each read PGSSLMODE and its siblings themselves.
func (t target) environmentURL() string {
	c := t.config
	u := url.URL{Scheme: "postgres", Path: "/" + c.Database}
	switch {
	case c.Password != "":
		u.User = url.UserPassword(c.User, c.Password)
	case c.User != "":
		u.User = url.User(c.User)
	}
	port := strconv.Itoa(int(c.Port))
	if strings.HasPrefix(c.Host, "/") {
		u.RawQuery = url.Values{"host": {c.Host}, "port": {port}}.Encode()
	} else {
		u.Host = net.JoinHostPort(c.Host, port)
	}
	return u.String()
}

// openQueue connects to t and checks that its schema is this binary's, as
// every command that uses the queue does before anything else.
func openQueue(ctx context.Context, t target, opts db.Options) (*db.DB, error) {
	d, err := db.Open(ctx, t.conn, opts)
	if err != nil {
		return nil, connectError(t, err, opts.Pooler)
	}
	if err := checkSchema(ctx, d); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// connectError says why t could not be used, and what to do about it.
func connectError(t target, err error, pooler bool) error {
	if errors.Is(err, db.ErrStartupRefused) && !pooler {
		return fmt.Errorf("%s refused the session settings sent at startup, as a transaction pooler "+
			"(PgBouncer, Supabase's Supavisor on port 6543) does: add --pooler (%w)", t, err)
	}
	return fmt.Errorf("cannot use %s: %w", t, err)
}

// checkSchema refuses a database whose migrations are not exactly this
// binary's: a worker on a missing table would fail every statement, and on
// a newer schema it would write what that schema no longer means.
func checkSchema(ctx context.Context, d *db.DB) error {
	s, err := migrate.ReadSchema(ctx, d.Pool(), migrate.VersionLatest)
	if err != nil {
		return fmt.Errorf("check the schema: %w", err)
	}
	return schemaError(s)
}

// schemaError is nil for a current schema, else what is wrong and the
// command that fixes it.
func schemaError(s migrate.Schema) error {
	known := len(s.Migrations)
	switch {
	case s.Current():
		return nil
	case len(s.Unknown) > 0:
		return fmt.Errorf("migrated ahead of this binary (%d migration(s) it does not know, the latest %s; it knows %d): "+
			"run the taskq that migrated it, or a newer one", len(s.Unknown), s.Unknown[len(s.Unknown)-1], known)
	case s.InPublic:
		return fmt.Errorf("not migrated (0/%d; an older taskq's record of migrations is in public.schema_migrations): "+
			"run taskq migrate up, which moves it", known)
	}
	return fmt.Errorf("not migrated (%d/%d): run taskq migrate up", s.Applied(), known)
}

// jobError turns the queue's typed errors about a job into what a person
// can act on, with the exit status scripts test.
func jobError(err error, jobID string) error {
	var argErr *tasks.ArgumentError
	switch {
	case errors.Is(err, db.ErrJobNotFound):
		return exitError{exitNoJob, fmt.Errorf("no job %q (taskq job list shows the jobs)", jobID)}
	case errors.Is(err, db.ErrJobExists):
		return exitError{exitJobRefused, fmt.Errorf("a job with id %q exists already (taskq job show %s)", jobID, jobID)}
	case errors.As(err, &argErr):
		return usageError{fmt.Sprintf("%s: %s", argumentName(argErr.Arg), argErr.Reason)}
	case errors.Is(err, db.ErrTimeout):
		return fmt.Errorf("%w; retry, and if it persists look for long transactions and lock waits (taskq stats)", err)
	case errors.Is(err, db.ErrUnavailable):
		return fmt.Errorf("%w; retry when the database answers", err)
	}
	return err
}

// argumentName names the flag or input behind an argument the queue
// refused (tasks.ArgumentError.Arg).
func argumentName(arg string) string {
	switch arg {
	case "spec.ID", "id", "jobID":
		return "the job id"
	case "spec.Domain":
		return "--domain"
	case "spec.Concurrency":
		return "--concurrency"
	case "spec.MaxPages":
		return "--max-pages"
	case "spec.MaxRetries":
		return "--max-retries"
	case "filter.Limit":
		return "--limit"
	case "filter.Statuses":
		return "--status"
	}
	return arg
}

// Passwords in text: URLs' (net/url masks them: Redacted) and libpq's
// password= and sslpassword= settings, in keyword/value strings and URL
// queries alike.
var (
	urlInText      = regexp.MustCompile("[A-Za-z][A-Za-z0-9+.-]*://[^\\s\"'`]+")
	passwordInText = regexp.MustCompile(`(?i)(password=)('[^']*'|[^\s&"'` + "`" + `]+)`)
)

// redact masks every password in s: the one helper for anything printed
// that may hold a URL or connection string (errors, refused flag values,
// stray words, logs).
func redact(s string) string {
	s = urlInText.ReplaceAllStringFunc(s, func(raw string) string {
		u, err := url.Parse(raw)
		if err == nil {
			return u.Redacted()
		}
		// No URL after all (pgx names these in its own errors): hide all of
		// what may be userinfo, up to the last '@'.
		scheme, rest, _ := strings.Cut(raw, "://")
		if i := strings.LastIndexByte(rest, '@'); i >= 0 {
			return scheme + "://xxxxx" + rest[i:]
		}
		return raw
	})
	return passwordInText.ReplaceAllString(s, "${1}xxxxx")
}

// redactingWriter redacts what it writes: for logs, a record per write.
type redactingWriter struct{ w io.Writer }

func (r redactingWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(r.w, redact(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
