// Package pgclustertest starts a private PostgreSQL cluster for one test: its
// own data directory and port, so a test may restart or stop it without
// disturbing the shared server other test packages use at the same time.
//
// The cluster runs from the installed binaries (initdb, pg_ctl) through
// package pglaunch, as the "postgres" system user when the test runs as root,
// since initdb refuses root. It is stopped and deleted when the test ends.
package pgclustertest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/blue-banded-bee/taskq/internal/pglaunch"
)

// Cluster is a running private PostgreSQL cluster.
type Cluster struct {
	// URL connects as the superuser "postgres" to the "postgres" database.
	URL string
	// Dir holds the data directory, the socket and the server log.
	Dir  string
	Port int

	c *pglaunch.Cluster
}

// Start initialises and starts a cluster for t, and registers its stop and
// deletion with t.Cleanup. It skips t when no PostgreSQL binaries are
// installed (or, as root, no "postgres" user to run them as), and fails it
// when the cluster does not start.
func Start(t testing.TB) *Cluster {
	t.Helper()
	// Not t.TempDir(): its parent is private to this user, and the server
	// may run as another one.
	dir, err := os.MkdirTemp("", "taskq-pgcluster-")
	if err != nil {
		t.Fatalf("pgclustertest: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	c, err := pglaunch.NewCluster(dir)
	if err != nil {
		t.Skipf("pgclustertest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if c.Running() {
			if err := c.Stop(ctx, "immediate"); err != nil {
				t.Logf("pgclustertest: stop: %v", err)
			}
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("pgclustertest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Init(ctx); err != nil {
		t.Fatalf("pgclustertest: %v", err)
	}
	// fsync is off: a clean shutdown (restart -m fast) still writes
	// everything out; only an operating system crash would lose data.
	if err := c.Start(ctx, "fsync=off", "max_connections=200"); err != nil {
		t.Fatalf("pgclustertest: start: %v\n%s", err, c.Log())
	}
	return &Cluster{URL: c.URL(), Dir: dir, Port: c.Port, c: c}
}

// DatabaseURL is the URL of database name on the cluster.
func (c *Cluster) DatabaseURL(name string) string {
	return pglaunch.DatabaseURL(c.Port, name)
}

// Restart restarts the server with "pg_ctl restart -m fast": every session
// is disconnected and its open transaction rolled back, then the server
// starts again on the same port with the same data. It returns once the
// server accepts connections again.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.c.Restart(ctx); err != nil {
		return fmt.Errorf("%w\n%s", err, c.Log())
	}
	return nil
}

// Log is the server's log so far, for failure messages.
func (c *Cluster) Log() string { return c.c.Log() }
