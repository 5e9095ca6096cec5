package pooler_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgbouncertest"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
)

// TestRoleSettingsApplyThroughPooler: the session settings db.Open cannot
// send through a pooler are set on the role instead (here for the test's
// database only: ALTER ROLE ... IN DATABASE ... SET), and every server
// connection PgBouncer opens starts with them: they show through the
// pooler, and a queue statement running past statement_timeout fails with
// ErrTimeout.
func TestRoleSettingsApplyThroughPooler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.URL(t, migrate.VersionLatest)
	direct := pgtest.Pool(t, url, 2)
	want := map[string]string{
		"statement_timeout":                   "2s",
		"lock_timeout":                        "10s",
		"idle_in_transaction_session_timeout": "1min",
	}
	for name, value := range want {
		// Before PgBouncer opens its first server connection, so that all
		// of them have the settings.
		stmt := "ALTER ROLE CURRENT_USER IN DATABASE " + pgx.Identifier{direct.Config().ConnConfig.Database}.Sanitize() +
			" SET " + name + " = '" + value + "'"
		if _, err := direct.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	b := pgbouncertest.Start(t, url, pgbouncertest.Options{PoolSize: 2})
	d, err := db.Open(ctx, b.URL, db.Options{Pooler: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	got := map[string]string{}
	for name := range want {
		var v string
		if err := d.Pool().QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		got[name] = v
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("settings through pgbouncer (-role's +session's):\n%s", diff)
	}
	_, err = d.Pool().Exec(ctx, "SELECT pg_sleep($1)", 30)
	if sqlState(err) != "57014" {
		t.Fatalf("30s sleep under a 2s statement_timeout: error %v, want query_canceled (57014)", err)
	}
	// A queue statement waiting on a lock (held on a direct connection)
	// longer than statement_timeout, but not lock_timeout, comes back as
	// the queue's ErrTimeout.
	id := job(t, d, tasks.JobOptions{Domain: "example.com"}, 1)
	tx, err := direct.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // nothing to keep
	if _, err := tx.Exec(ctx, "SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", id); err != nil {
		t.Fatal(err)
	}
	if err := d.PauseJob(ctx, id); !errors.Is(err, db.ErrTimeout) || !db.IsRetryable(err) {
		t.Fatalf("PauseJob of a locked job: error %v, want ErrTimeout", err)
	}
}
