package localpg_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/internal/localpg"
	"github.com/blue-banded-bee/taskq/internal/pglaunch"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
)

// TestCreateDatabase creates a database, writes to it through the URL
// returned, and drops it, even with a session still open on it.
func TestCreateDatabase(t *testing.T) {
	ctx := context.Background()
	server := pgtest.Server(t)
	name := fmt.Sprintf("localpg_test_%d", time.Now().UnixNano())
	url, drop, err := localpg.CreateDatabase(ctx, server.URL, name)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		drop()
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	if db != name {
		t.Errorf("connected to %q, want %q", db, name)
	}

	drop()
	admin, err := pgx.Connect(ctx, server.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("database %s still exists after drop", name)
	}
}

func TestCreateDatabaseUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Port 1 on loopback: nothing listens there.
	_, _, err := localpg.CreateDatabase(ctx, "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable", "x")
	if !errors.Is(err, localpg.ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
}

// TestThrowawayStartsReusesAndStops starts a throwaway cluster in a private
// temporary directory (as the "postgres" user when the test runs as root),
// finds it again rather than starting a second one, and removes it.
func TestThrowawayStartsReusesAndStops(t *testing.T) {
	ctx := context.Background()
	// Not t.TempDir(): its parent is private to this user, and the server
	// may run as another one.
	tmp, err := os.MkdirTemp("", "localpg-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(tmp) })
	t.Setenv("TMPDIR", tmp)
	if _, err := pglaunch.BinDir(); err != nil {
		t.Skipf("no PostgreSQL binaries: %v", err)
	}

	first, err := localpg.StartThrowaway(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = localpg.StopThrowaway(context.Background()) })
	if !first.Throwaway || first.Dir != localpg.Dir() || filepath.Dir(first.Dir) != tmp {
		t.Fatalf("server = %+v; want a throwaway one in %s", first, tmp)
	}
	if err := pglaunch.Ping(ctx, first.URL); err != nil {
		t.Fatalf("throwaway server does not answer: %v", err)
	}
	again, err := localpg.StartThrowaway(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again.URL != first.URL {
		t.Fatalf("second start gave %s; want the running server at %s", again.URL, first.URL)
	}

	if err := localpg.StopThrowaway(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pglaunch.Ping(ctx, first.URL); err == nil {
		t.Fatalf("server at %s still answers after StopThrowaway", first.URL)
	}
	if _, err := os.Stat(first.Dir); !os.IsNotExist(err) {
		t.Fatalf("%s still there after StopThrowaway (stat: %v)", first.Dir, err)
	}
}
