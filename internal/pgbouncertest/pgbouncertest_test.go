package pgbouncertest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/internal/pgbouncertest"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
)

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	// Unprepared statements: the point here is the pooling, not pgx's
	// statement cache (internal/testsuites/pooler shows what that cache does).
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("connect through pgbouncer: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func backendPID(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var pid int
	if err := conn.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestStartPoolsTransactions checks that what Start runs is transaction
// pooling: with one server connection, two clients connected at the same
// time both run on it (session pooling would make the second wait for the
// first to disconnect), and a session setting one client makes outside a
// transaction is what the other then finds on the shared server.
func TestStartPoolsTransactions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	direct := pgtest.EmptyURL(t)
	b := pgbouncertest.Start(t, direct, pgbouncertest.Options{PoolSize: 1})

	a, c := connect(t, b.URL), connect(t, b.URL)
	if pa, pc := backendPID(t, a), backendPID(t, c); pa != pc {
		t.Fatalf("clients ran on server backends %d and %d; want one shared backend (pool size 1)", pa, pc)
	}
	if _, err := a.Exec(ctx, "SET statement_timeout = '1234ms'"); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := c.QueryRow(ctx, "SHOW statement_timeout").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "1234ms" {
		t.Fatalf("other client's statement_timeout = %q; want the leaked 1234ms of the shared server", got)
	}

	stats, err := b.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Mode != "transaction" || stats.Servers != 1 || stats.ClientsActive != 2 {
		t.Fatalf("SHOW POOLS: %+v; want transaction mode, 1 server connection shared by 2 clients", stats)
	}
}
