// Package migrate applies the embedded dbmate migrations (sql/schema) through
// dbmate's own library, so what runs here is what the dbmate CLI runs in
// scripts/deploy. Around dbmate it adds what dbmate lacks:
//
//   - a session advisory lock, so two instances migrating at once take turns
//     instead of racing (dbmate takes no lock);
//   - before migrating, it drops INVALID indexes that a failed
//     CREATE INDEX CONCURRENTLY left behind, so the pending migration rebuilds
//     them instead of failing on the name (or, with IF NOT EXISTS, silently
//     keeping an index the planner never uses);
//   - lock_timeout on every migration but the CREATE INDEX CONCURRENTLY
//     ones, so an ALTER cannot queue behind a long transaction and stall
//     every query behind it (a concurrent build's wait for older
//     transactions is itself a lock wait, which the timeout would cut), and
//     client_connection_check_interval, so a killed migrator's concurrent
//     build is cancelled rather than finishing unrecorded;
//   - a target version, so the load test can build the schema as it stood
//     before the optimisations;
//   - its record of applied migrations in taskq_meta (MigrationsTable), a
//     schema no API role can use, instead of dbmate's default
//     public.schema_migrations, which Supabase's API would expose; a
//     database that has the old table gets it moved before anything else.
//
// Migrations are applied one dbmate run each, so that each gets the
// settings it needs; scripts/deploy does the same with the CLI.
package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing/fstest"
	"time"

	"github.com/amacneil/dbmate/v2/pkg/dbmate"
	_ "github.com/amacneil/dbmate/v2/pkg/driver/postgres" // dbmate's postgres driver
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/blue-banded-bee/taskq/gen"
	"github.com/blue-banded-bee/taskq/sql/schema"
)

// Versions of the migrations other code refers to.
const (
	// VersionBaseSchema is the schema as production had it before round 2.
	VersionBaseSchema = "20251024000002"
	// VersionTaskFetchResults adds the columns of a cache-warming fetch to
	// tasks. Production's rows had them, so the load test's "before"
	// database gets them too (UpSQL), on top of the base schema.
	VersionTaskFetchResults = "20251024000018"
	// VersionLatest means every migration.
	VersionLatest = ""
)

// MigrationsTable is where dbmate records applied migrations, here and in
// scripts/deploy (its --migrations-table). dbmate creates the schema when it
// is missing; migration 20251024000001 keeps its own bookkeeping beside it.
const MigrationsTable = "taskq_meta.schema_migrations"

// lockKey is the advisory lock migrations take ("taskq" in ASCII).
const lockKey int64 = 0x7461736b71

// lockPollInterval is how often a waiting migrator retries the lock.
const lockPollInterval = 200 * time.Millisecond

// ErrUnknownVersion is returned for a target version no migration has.
var ErrUnknownVersion = errors.New("no migration has that version")

var fileName = regexp.MustCompile(`^(\d+)_.+\.sql$`)

// Runner migrates one database.
type Runner struct {
	// URL of the database, postgres://... (sslmode=disable is added when
	// neither the URL nor PGSSLMODE sets an sslmode, as dbmate's driver
	// would otherwise require TLS).
	URL string
	// Target is the last version to apply; VersionLatest applies all.
	Target string
	// Log receives dbmate's progress lines; nil discards them.
	Log io.Writer
	// LockTimeout bounds how long a migration waits for a lock before it
	// fails (and can be retried) instead of queueing traffic behind it.
	// Default 5s; negative disables. Not applied to CREATE INDEX
	// CONCURRENTLY migrations.
	LockTimeout time.Duration
}

// Migration is one migration file and whether it is applied.
type Migration struct {
	Version string
	File    string
	Applied bool
}

// Files returns the migrations up to and including target (all when target
// is VersionLatest), as a file system dbmate reads.
func Files(target string) (fs.FS, error) {
	entries, err := fs.ReadDir(schema.FS, ".")
	if err != nil {
		return nil, err
	}
	out := fstest.MapFS{}
	found := target == VersionLatest
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		if target != VersionLatest && m[1] > target {
			continue
		}
		found = found || m[1] == target
		data, err := fs.ReadFile(schema.FS, e.Name())
		if err != nil {
			return nil, err
		}
		out[e.Name()] = &fstest.MapFile{Data: data, Mode: 0o444}
	}
	if !found {
		return nil, fmt.Errorf("%w: %s", ErrUnknownVersion, target)
	}
	return out, nil
}

// UpSQL returns the up section of the migration of version, for running it
// outside the order of the migrations (see VersionTaskFetchResults).
func UpSQL(version string) (string, error) {
	names, err := fs.Glob(schema.FS, version+"_*.sql")
	if err != nil || len(names) != 1 {
		return "", fmt.Errorf("%w: %s", ErrUnknownVersion, version)
	}
	parsed, err := (&dbmate.Migration{FS: schema.FS, FilePath: names[0], FileName: names[0], Version: version}).Parse()
	if err != nil {
		return "", fmt.Errorf("migration %s: %w", names[0], err)
	}
	return parsed.Up, nil
}

// Versions returns the versions of the migrations up to target (all when
// target is VersionLatest), oldest first.
func Versions(target string) ([]string, error) {
	files, err := Files(target)
	if err != nil {
		return nil, err
	}
	names, _ := fs.Glob(files, "*.sql")
	sort.Strings(names)
	out := make([]string, 0, len(names))
	for _, name := range names {
		out = append(out, fileName.FindStringSubmatch(name)[1])
	}
	return out, nil
}

// Schema compares the migrations a database has applied with those this
// binary embeds.
type Schema struct {
	// Migrations are the binary's, oldest first, each with whether the
	// database has applied it.
	Migrations []Migration
	// Unknown are versions the database has applied and the binary does
	// not know: a newer binary migrated it.
	Unknown []string
	// InPublic: the record is still in public.schema_migrations, where
	// databases migrated before it moved keep it, and taskq_meta has none;
	// every migration then reads as pending. Runner.Up moves it.
	InPublic bool
}

// Applied counts the binary's migrations the database has applied.
func (s Schema) Applied() int {
	n := 0
	for _, m := range s.Migrations {
		if m.Applied {
			n++
		}
	}
	return n
}

// Pending counts the binary's migrations the database has not applied.
func (s Schema) Pending() int { return len(s.Migrations) - s.Applied() }

// Current tells whether the database has exactly the binary's migrations.
func (s Schema) Current() bool {
	return s.Pending() == 0 && len(s.Unknown) == 0 && !s.InPublic
}

// ReadSchema reads which of the migrations up to target (VersionLatest:
// all) the database behind db has applied, without the migration lock and
// without writing: what a worker checks before it starts. It works through
// a transaction pooler.
func ReadSchema(ctx context.Context, db gen.DBTX, target string) (Schema, error) {
	files, err := Files(target)
	if err != nil {
		return Schema{}, err
	}
	names, _ := fs.Glob(files, "*.sql")
	sort.Strings(names)
	var s Schema
	q := gen.New()
	rec, err := q.MigrationsRecord(ctx, db)
	if err != nil {
		return Schema{}, fmt.Errorf("find the record of applied migrations: %w", err)
	}
	var applied []string
	if rec.Recorded {
		if applied, err = q.MigrationsApplied(ctx, db); err != nil {
			return Schema{}, fmt.Errorf("read %s: %w", MigrationsTable, err)
		}
	} else {
		s.InPublic = rec.InPublic
	}
	isApplied := make(map[string]bool, len(applied))
	for _, v := range applied {
		isApplied[v] = true
	}
	all, err := Versions(VersionLatest)
	if err != nil {
		return Schema{}, err
	}
	isKnown := make(map[string]bool, len(all))
	for _, v := range all {
		isKnown[v] = true
	}
	for _, name := range names {
		v := fileName.FindStringSubmatch(name)[1]
		s.Migrations = append(s.Migrations, Migration{Version: v, File: name, Applied: isApplied[v]})
	}
	for _, v := range applied {
		if !isKnown[v] {
			s.Unknown = append(s.Unknown, v)
		}
	}
	return s, nil
}

// Schema is ReadSchema on a connection of its own to the runner's database,
// for the runner's target.
func (r Runner) Schema(ctx context.Context) (Schema, error) {
	conn, err := pgx.Connect(ctx, r.URL)
	if err != nil {
		return Schema{}, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	return ReadSchema(ctx, conn, r.Target)
}

// Hash identifies the migrations up to target by their names and contents.
func Hash(target string) (string, error) {
	files, err := Files(target)
	if err != nil {
		return "", err
	}
	names, _ := fs.Glob(files, "*.sql")
	sort.Strings(names)
	h := sha256.New()
	// Where the record lives is part of what a migrated template holds.
	fmt.Fprintf(h, "%s\x00", MigrationsTable)
	for _, name := range names {
		data, _ := fs.ReadFile(files, name)
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// Up applies every pending migration up to the target, holding the migration
// lock, after dropping invalid indexes left by an earlier failed build.
func (r Runner) Up(ctx context.Context) error {
	return r.locked(ctx, func(conn *pgx.Conn, db *dbmate.DB) error {
		if err := dropInvalidIndexes(ctx, conn, r.log()); err != nil {
			return err
		}
		found, err := db.FindMigrations()
		if err != nil {
			return err
		}
		for _, m := range found {
			if m.Applied {
				continue
			}
			parsed, err := m.Parse()
			if err != nil {
				return err
			}
			lockTimeout := r.LockTimeout
			if lockTimeout == 0 {
				lockTimeout = 5 * time.Second
			}
			if strings.Contains(strings.ToUpper(parsed.Up), "CONCURRENTLY") || lockTimeout < 0 {
				lockTimeout = 0
			}
			one := r
			one.Target = m.Version
			step, err := one.dbmate(sessionOptions(lockTimeout))
			if err != nil {
				return err
			}
			if err := step.Migrate(); err != nil {
				return err
			}
		}
		return nil
	})
}

// sessionOptions are the settings each migration's session starts with, as
// the libpq options parameter.
func sessionOptions(lockTimeout time.Duration) string {
	return fmt.Sprintf("-c lock_timeout=%d -c client_connection_check_interval=2000", lockTimeout.Milliseconds())
}

// Down rolls back the most recent applied migration.
func (r Runner) Down(ctx context.Context) error {
	return r.locked(ctx, func(_ *pgx.Conn, _ *dbmate.DB) error {
		db, err := r.dbmate(sessionOptions(0))
		if err != nil {
			return err
		}
		return db.Rollback()
	})
}

// Status lists every migration with whether it is applied. It holds the
// migration lock, as it may first move the record out of public.
func (r Runner) Status(ctx context.Context) ([]Migration, error) {
	var out []Migration
	err := r.locked(ctx, func(_ *pgx.Conn, db *dbmate.DB) error {
		found, err := db.FindMigrations()
		if err != nil {
			return err
		}
		out = make([]Migration, 0, len(found))
		for _, m := range found {
			out = append(out, Migration{Version: m.Version, File: m.FileName, Applied: m.Applied})
		}
		return nil
	})
	return out, err
}

func (r Runner) log() io.Writer {
	if r.Log == nil {
		return io.Discard
	}
	return r.Log
}

// dbmate returns dbmate's handle on the migrations up to the target, its
// sessions started with options (libpq's options parameter) if not empty.
func (r Runner) dbmate(options string) (*dbmate.DB, error) {
	u, err := url.Parse(r.URL)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	q := u.Query()
	// dbmate's driver (lib/pq) reads PGSSLMODE itself when the URL has none.
	if q.Get("sslmode") == "" && os.Getenv("PGSSLMODE") == "" {
		q.Set("sslmode", "disable")
	}
	if options != "" {
		q.Set("options", strings.TrimSpace(q.Get("options")+" "+options))
	}
	u.RawQuery = q.Encode()
	files, err := Files(r.Target)
	if err != nil {
		return nil, err
	}
	db := dbmate.New(u)
	db.FS = files
	db.MigrationsDir = []string{"."}
	db.AutoDumpSchema = false
	db.MigrationsTableName = MigrationsTable
	db.Strict = true
	db.Log = r.log()
	return db, nil
}

// locked runs fn while holding the migration advisory lock on a session of
// its own, after moving a record of applied migrations left in public to
// MigrationsTable.
//
// A waiter polls with pg_try_advisory_lock rather than blocking in
// pg_advisory_lock: a blocked statement keeps a transaction open, and the
// migrator holding the lock may be running CREATE INDEX CONCURRENTLY, which
// waits for every open transaction to end. The two would wait for each other
// through this process, where PostgreSQL's deadlock detector cannot see it.
func (r Runner) locked(ctx context.Context, fn func(*pgx.Conn, *dbmate.DB) error) error {
	db, err := r.dbmate("")
	if err != nil {
		return err
	}
	cfg, err := pgx.ParseConfig(r.URL)
	if err != nil {
		return fmt.Errorf("database url: %w", err)
	}
	// The move below reports itself in a notice.
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { fmt.Fprintf(r.log(), "%s\n", n.Message) }
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect for migration lock: %w", err)
	}
	defer conn.Close(context.Background())
	for waited := false; ; waited = true {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", lockKey).Scan(&got); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		if got {
			break
		}
		if !waited {
			fmt.Fprintln(r.log(), "Waiting for another migration to finish...")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for migration lock: %w", ctx.Err())
		case <-time.After(lockPollInterval):
		}
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", lockKey) //nolint:errcheck // closing the session releases it too
	if err := gen.New().MigrationsTableMoveFromPublic(ctx, conn); err != nil {
		return fmt.Errorf("move public.schema_migrations to %s: %w", MigrationsTable, err)
	}
	return fn(conn, db)
}

func dropInvalidIndexes(ctx context.Context, conn *pgx.Conn, log io.Writer) error {
	stmts, err := gen.New().IndexInvalidDropStatements(ctx, conn)
	if err != nil {
		return fmt.Errorf("list invalid indexes: %w", err)
	}
	for _, stmt := range stmts {
		fmt.Fprintf(log, "Invalid index left by a failed build: %s\n", stmt)
		// One statement per call: CONCURRENTLY refuses to run in a transaction.
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	return nil
}
