// Package localpg finds a PostgreSQL server to develop and test against: the
// one a URL names, else the one listening on 127.0.0.1:5432, else a throwaway
// cluster it starts from the installed PostgreSQL binaries.
//
// The throwaway cluster lives under the system's temporary directory, one per
// user, and is reused by later calls (and by concurrent test processes, which
// take a file lock to start it once). "taskq localpg stop" or Stop removes it.
package localpg

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/internal/pglaunch"
)

// DefaultURL is where a local development server listens on this machine kind.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// ErrNoPostgres means no server was reachable and none could be started.
var ErrNoPostgres = errors.New("no PostgreSQL server found")

// ErrUnreachable means a server URL given could not be connected to.
var ErrUnreachable = errors.New("PostgreSQL server unreachable")

// Server is a PostgreSQL server and how it was found.
type Server struct {
	// URL connects as a superuser to the server's "postgres" database.
	URL string
	// Throwaway is true when this package started the server.
	Throwaway bool
	// Dir holds a throwaway server's data directory and log.
	Dir string
}

// Find returns the server at url if url is not empty, else the one at
// DefaultURL if it answers, else a throwaway cluster.
func Find(ctx context.Context, url string) (Server, error) {
	if url != "" {
		return Server{URL: url}, nil
	}
	if pglaunch.Ping(ctx, DefaultURL) == nil {
		return Server{URL: DefaultURL}, nil
	}
	return StartThrowaway(ctx)
}

// Dir is where this user's throwaway cluster lives.
func Dir() string {
	return filepath.Join(os.TempDir(), "taskq-postgres-"+strconv.Itoa(os.Getuid()))
}

// StartThrowaway starts this user's throwaway cluster, or returns it if it is
// already running.
func StartThrowaway(ctx context.Context) (Server, error) {
	dir := Dir()
	c, err := cluster(dir)
	if err != nil {
		return Server{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Server{}, fmt.Errorf("throwaway postgres: %w", err)
	}
	unlock, err := lockFile(filepath.Join(dir, "lock"))
	if err != nil {
		return Server{}, fmt.Errorf("throwaway postgres: %w", err)
	}
	defer unlock()

	srv := Server{Throwaway: true, Dir: dir}
	if port, err := os.ReadFile(filepath.Join(dir, "port")); err == nil {
		if c.Port, err = strconv.Atoi(strings.TrimSpace(string(port))); err == nil && pglaunch.Ping(ctx, c.URL()) == nil {
			srv.URL = c.URL()
			return srv, nil
		}
	}
	if !c.Initialised() {
		_ = os.RemoveAll(c.DataDir())
		if err := c.Init(ctx); err != nil {
			return Server{}, fmt.Errorf("throwaway postgres: %w", err)
		}
	}
	if err := c.Start(ctx, "max_connections=300"); err != nil {
		return Server{}, fmt.Errorf("throwaway postgres: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "port"), []byte(strconv.Itoa(c.Port)), 0o644); err != nil {
		return Server{}, err
	}
	srv.URL = c.URL()
	return srv, nil
}

// StopThrowaway stops this user's throwaway cluster and deletes it.
func StopThrowaway(ctx context.Context) error {
	dir := Dir()
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		return nil
	}
	c, err := cluster(dir)
	if err != nil {
		return err
	}
	// Already stopped is fine; anything else leaves the directory for a look.
	if err := c.Stop(ctx, "fast"); err != nil && c.Running() {
		return fmt.Errorf("throwaway postgres: %w", err)
	}
	return os.RemoveAll(dir)
}

// cluster is the throwaway cluster in dir; the error, wrapping ErrNoPostgres,
// says what to do when it cannot be run here.
func cluster(dir string) (*pglaunch.Cluster, error) {
	c, err := pglaunch.NewCluster(dir)
	if errors.Is(err, pglaunch.ErrNotInstalled) {
		return nil, fmt.Errorf("%w: nothing answers at 127.0.0.1:5432 and no PostgreSQL binaries "+
			"(initdb, pg_ctl) are installed; install them (Debian/Ubuntu: apt-get install postgresql) "+
			"or point at a server you have (DATABASE_URL for taskq, TASKQ_TEST_DATABASE_URL for the tests)", ErrNoPostgres)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w, or point at a server "+
			"(DATABASE_URL for taskq, TASKQ_TEST_DATABASE_URL for the tests)", ErrNoPostgres, err)
	}
	return c, nil
}

func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// CreateDatabase creates the database name on the server that serverURL
// (a superuser or CREATEDB role) names, and returns its URL and a function
// that drops it, ending any session still on it. The error wraps
// ErrUnreachable when the server cannot be reached.
func CreateDatabase(ctx context.Context, serverURL, name string) (string, func(), error) {
	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		return "", nil, err
	}
	u.Path = "/" + name
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
	return u.String(), drop, nil
}
