// Package pgtest gives each test a database of its own on a real PostgreSQL
// server, migrated by this project's migrations, so tests run in parallel and
// never see each other's rows.
//
// The first test of a migration set migrates a template database once
// (pgtestdb names it by a hash of the migrations); every test then gets a
// clone of it, which takes milliseconds. A failed test's database is kept and
// its URL logged, for a look afterwards.
//
// The server is TASKQ_TEST_DATABASE_URL when set (a superuser URL), else the
// one on 127.0.0.1:5432, else a throwaway cluster started from the installed
// binaries (see localpg).
package pgtest

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver pgtestdb uses
	"github.com/peterldowns/pgtestdb"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/localpg"
	"github.com/blue-banded-bee/taskq/migrate"
)

// EnvURL names the environment variable that points tests at a server.
const EnvURL = "TASKQ_TEST_DATABASE_URL"

var server struct {
	once sync.Once
	srv  localpg.Server
	err  error
}

// Server returns the PostgreSQL server tests run against, starting a
// throwaway one if needed; it fails the test when there is none.
func Server(t testing.TB) localpg.Server {
	t.Helper()
	server.once.Do(func() {
		server.srv, server.err = localpg.Find(context.Background(), os.Getenv(EnvURL))
	})
	if server.err != nil {
		t.Fatalf("pgtest: %v", server.err)
	}
	return server.srv
}

// URL returns the URL of a new database migrated up to target
// (migrate.VersionLatest for all migrations).
func URL(t testing.TB, target string) string {
	t.Helper()
	return pgtestdb.Custom(t, config(t), migrator{target: target}).URL()
}

// EmptyURL returns the URL of a new database with no migrations applied.
func EmptyURL(t testing.TB) string {
	t.Helper()
	return pgtestdb.Custom(t, config(t), pgtestdb.NoopMigrator{}).URL()
}

// New returns a pool on a new database with every migration applied.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return Pool(t, URL(t, migrate.VersionLatest), 8)
}

// Pool opens a pool of at most maxConns connections to url, set up as
// db.Open sets up production's (session timeouts, the queue's statement
// settings), closed when the test ends (before pgtestdb drops the database).
func Pool(t testing.TB, url string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	// Production's pool set-up, timeouts included.
	cfg, err := db.PoolConfig(url, db.Options{MaxConns: maxConns})
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func config(t testing.TB) pgtestdb.Config {
	t.Helper()
	u, err := url.Parse(Server(t).URL)
	if err != nil {
		t.Fatalf("pgtest: server url: %v", err)
	}
	password, _ := u.User.Password()
	return pgtestdb.Config{
		DriverName: "pgx",
		Host:       u.Hostname(),
		Port:       u.Port(),
		User:       u.User.Username(),
		Password:   password,
		Database:   "postgres",
		Options:    "sslmode=disable",
		// Superuser: the migrations create the Supabase roles on a bare
		// server, and tests switch to them with SET ROLE.
		TestRole: &pgtestdb.Role{
			Username:     "taskq_test",
			Password:     "taskq_test",
			Capabilities: "SUPERUSER",
		},
		// A test that kills worker processes may leave their sessions behind.
		ForceTerminateConnections: true,
	}
}

// migrator adapts migrate.Runner to pgtestdb.
type migrator struct {
	target string
}

func (m migrator) Hash() (string, error) {
	return migrate.Hash(m.target)
}

func (m migrator) Migrate(ctx context.Context, _ *sql.DB, conf pgtestdb.Config) error {
	return migrate.Runner{URL: conf.URL(), Target: m.target}.Up(ctx)
}
