package localpg_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/internal/localpg"
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
