package deploy_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/internal/sharedtest"
	"github.com/blue-banded-bee/taskq/migrate"
)

// Versions the tests migrate to before running the script.
const (
	// versionBeforeTaskQueue is the last migration before task_queue, whose
	// ALTER TABLE tasks needs an ACCESS EXCLUSIVE lock on tasks.
	versionBeforeTaskQueue = "20251024000011"
	// versionBeforeTasksPageIndex is the last migration before
	// idx_tasks_page_id, a CREATE INDEX CONCURRENTLY.
	versionBeforeTasksPageIndex = "20251024000005"
	// versionBeforeTasksClaimIndex is the last migration before
	// idx_tasks_claim, a CREATE INDEX CONCURRENTLY.
	versionBeforeTasksClaimIndex = "20251024000012"
)

// lockKey is the migration advisory lock of migrate, which the
// script takes too. PostgreSQL shows a bigint key in pg_locks as classid (its
// high 32 bits) and objid (its low 32 bits).
const (
	lockKey       int64 = 0x7461736b71
	lockKeyClass        = uint32(lockKey >> 32)
	lockKeyObject       = uint32(lockKey & 0xffffffff)
)

// waitingMessage is what the script prints when another migration holds
// the lock.
const waitingMessage = "Waiting for another migration to finish"

// TestUpAppliesEveryMigration deploys to an empty database: every migration
// file is recorded once, every index is valid, and the schema is the one the
// Go runner builds. A second deploy finds nothing to do, and status agrees.
func TestUpAppliesEveryMigration(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyURL(t)

	mustDeploy(t, url, nil)
	conn := connect(t, url)
	checkFullyMigrated(t, conn)
	if diff := cmp.Diff(schemaSnapshot(t, connect(t, pgtest.URL(t, migrate.VersionLatest))), schemaSnapshot(t, conn)); diff != "" {
		t.Fatalf("schema after scripts/deploy differs from the Go runner's (-runner +script):\n%s", diff)
	}

	if out := mustDeploy(t, url, nil); !strings.Contains(out, "Nothing to migrate") {
		t.Errorf("a second deploy should find nothing to migrate; output:\n%s", out)
	}
	if out := mustDeploy(t, url, nil, "status"); !strings.Contains(out, "Pending: 0") {
		t.Errorf("status after deploying should show nothing pending; output:\n%s", out)
	}
	checkFullyMigrated(t, conn)
}

// TestConcurrentDeploysTakeTurns starts two deploys on one empty database
// while the migration lock is held, so that both are certainly running
// before either can migrate, then lets them go: both succeed, one migrates
// and the other finds nothing to do.
func TestConcurrentDeploysTakeTurns(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyURL(t)
	conn := connect(t, url)
	holder := connect(t, url)
	if _, err := holder.Exec(context.Background(), "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		t.Fatal(err)
	}

	deploys := []*deployRun{startDeploy(t, url, nil), startDeploy(t, url, nil)}
	for _, d := range deploys {
		waitFor(t, "both deploys waiting for the lock", func() bool { return strings.Contains(d.output(), waitingMessage) })
	}
	if _, err := holder.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", lockKey); err != nil {
		t.Fatal(err)
	}

	nothingToDo := 0
	for i, d := range deploys {
		code, out := d.wait(t)
		if code != 0 {
			t.Fatalf("deploy %d exited %d:\n%s", i, code, out)
		}
		if strings.Contains(out, "Nothing to migrate") {
			nothingToDo++
		}
	}
	if nothingToDo != 1 {
		t.Errorf("%d of 2 deploys found nothing to migrate, want exactly 1", nothingToDo)
	}
	checkFullyMigrated(t, conn)
	if diff := cmp.Diff(schemaSnapshot(t, connect(t, pgtest.URL(t, migrate.VersionLatest))), schemaSnapshot(t, conn)); diff != "" {
		t.Fatalf("schema after concurrent deploys differs from the Go runner's (-runner +script):\n%s", diff)
	}
}

// TestLockTimeoutStopsMigrationInsteadOfQueueing holds a lock a migration
// needs (an open transaction that read tasks, as a long report would). The
// deploy must give up with the lock-timeout error rather than wait, so that
// the queries queued behind its ACCESS EXCLUSIVE request could go on; it
// records nothing, releases the migration lock, and a later deploy succeeds.
func TestLockTimeoutStopsMigrationInsteadOfQueueing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyURL(t)
	migrateTo(t, url, versionBeforeTaskQueue)
	conn := connect(t, url)
	tx := holdTasks(t, connect(t, url))

	// The ceiling only tells a hang from a failure; the assertion is on the
	// error. DBMATE keeps building the tool out of it.
	env := []string{"DEPLOY_LOCK_TIMEOUT=1s", "DBMATE=" + pinnedDbmate(t)}
	code, out := startDeploy(t, url, env).waitWithin(t, 60*time.Second)
	if code == 0 {
		t.Fatalf("deploy succeeded while tasks was locked:\n%s", out)
	}
	for _, want := range []string{"canceling statement due to lock timeout", "waited longer than lock_timeout", "DEPLOY_LOCK_TIMEOUT"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if got := lastApplied(t, conn); got != versionBeforeTaskQueue {
		t.Errorf("last applied migration = %s, want %s (the cancelled one must not be recorded)", got, versionBeforeTaskQueue)
	}
	if holder := lockHolder(t, conn); holder != "" {
		t.Errorf("the failed deploy left the migration lock held by %q", holder)
	}

	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	mustDeploy(t, url, nil)
	checkFullyMigrated(t, conn)
}

// TestConcurrentIndexBuildIsNotCutByLockTimeout: CREATE INDEX CONCURRENTLY
// waits, as a lock wait, for every older transaction, which blocks no
// traffic. With DEPLOY_LOCK_TIMEOUT applied to it, any transaction longer
// than the timeout would fail the build and leave an INVALID index; the
// script runs such migrations without a lock timeout, so the build waits
// longer than DEPLOY_LOCK_TIMEOUT and succeeds.
func TestConcurrentIndexBuildIsNotCutByLockTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyURL(t)
	migrateTo(t, url, versionBeforeTasksClaimIndex)
	conn := connect(t, url)
	tx := holdTasks(t, connect(t, url))

	deploy := startDeploy(t, url, []string{"DEPLOY_LOCK_TIMEOUT=1s"})
	waitFor(t, "the index build waiting for the old transaction", func() bool {
		var waiting bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = 'taskq-deploy'
			  AND query LIKE '%CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock')`).Scan(&waiting)
		return err == nil && waiting
	})
	// Longer than DEPLOY_LOCK_TIMEOUT: with it, the build would fail now.
	time.Sleep(3 * time.Second)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if code, out := deploy.wait(t); code != 0 {
		t.Fatalf("deploy exited %d:\n%s", code, out)
	}
	checkFullyMigrated(t, conn)
}

// TestUpRebuildsIndexLeftInvalid makes a CREATE INDEX CONCURRENTLY fail
// half-way (cancelled while it waits for an old transaction), which leaves an
// INVALID index under the name its migration creates. The deploy drops it and
// the migration builds it again, valid.
func TestUpRebuildsIndexLeftInvalid(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyURL(t)
	migrateTo(t, url, versionBeforeTasksPageIndex)

	// An open transaction with a snapshot: the concurrent build waits for it.
	tx := holdTasks(t, connect(t, url))
	builder := connect(t, url)
	watcher := connect(t, url)
	done := make(chan error, 1)
	go func() {
		_, err := builder.Exec(ctx, "CREATE INDEX CONCURRENTLY idx_tasks_page_id ON tasks (page_id)")
		done <- err
	}()
	waitFor(t, "the concurrent build waiting for the old transaction", func() bool {
		var waiting bool
		err := watcher.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock')`).Scan(&waiting)
		return err == nil && waiting
	})
	if _, err := watcher.Exec(ctx, `SELECT pg_cancel_backend(pid) FROM pg_stat_activity
		WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatal("the concurrent build was not cancelled")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := invalidIndexes(t, watcher); !cmp.Equal(got, []string{"idx_tasks_page_id"}) {
		t.Fatalf("setup: invalid indexes = %v, want [idx_tasks_page_id]", got)
	}

	out := mustDeploy(t, url, nil)
	if !strings.Contains(out, "DROP INDEX CONCURRENTLY IF EXISTS idx_tasks_page_id;") {
		t.Errorf("the deploy did not report dropping the invalid index:\n%s", out)
	}
	checkFullyMigrated(t, watcher)
	var def string
	if err := watcher.QueryRow(ctx, `SELECT pg_get_indexdef('idx_tasks_page_id'::regclass)`).Scan(&def); err != nil {
		t.Fatal(err)
	}
	if want := "CREATE INDEX idx_tasks_page_id ON public.tasks USING btree (page_id)"; def != want {
		t.Errorf("rebuilt index = %q, want %q", def, want)
	}
}

// TestGoRunnerAndScriptTakeTurns runs migrate's Runner.Up and the
// script on one database at once, each way round: whichever holds the
// migration lock first (kept busy by a transaction on tasks, so the other
// certainly finds it held), the other waits, and both succeed.
func TestGoRunnerAndScriptTakeTurns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("script waits for the runner", func(t *testing.T) {
		t.Parallel()
		url := pgtest.EmptyURL(t)
		migrateTo(t, url, versionBeforeTaskQueue)
		conn := connect(t, url)
		tx := holdTasks(t, connect(t, url))

		runnerDone := make(chan error, 1)
		// The runner must wait behind the held lock for as long as the test
		// needs, so its own lock_timeout is turned off here.
		go func() { runnerDone <- migrate.Runner{URL: url, LockTimeout: -1}.Up(ctx) }()
		waitFor(t, "the runner holding the migration lock", func() bool { return lockHolder(t, conn) != "" })
		deploy := startDeploy(t, url, nil)
		waitFor(t, "the script waiting for the lock", func() bool { return strings.Contains(deploy.output(), waitingMessage) })
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}

		if err := <-runnerDone; err != nil {
			t.Fatalf("runner: %v", err)
		}
		code, out := deploy.wait(t)
		if code != 0 {
			t.Fatalf("deploy exited %d:\n%s", code, out)
		}
		if !strings.Contains(out, "Nothing to migrate") {
			t.Errorf("the script should have found the runner's work done:\n%s", out)
		}
		checkFullyMigrated(t, conn)
	})

	t.Run("runner waits for the script", func(t *testing.T) {
		t.Parallel()
		url := pgtest.EmptyURL(t)
		migrateTo(t, url, versionBeforeTaskQueue)
		conn := connect(t, url)
		tx := holdTasks(t, connect(t, url))

		deploy := startDeploy(t, url, []string{"DEPLOY_LOCK_TIMEOUT=60s"})
		waitFor(t, "the script holding the migration lock", func() bool { return lockHolder(t, conn) == "taskq-deploy-lock" })
		var runnerLog sharedtest.Buffer
		runnerDone := make(chan error, 1)
		go func() { runnerDone <- migrate.Runner{URL: url, Log: &runnerLog}.Up(ctx) }()
		waitFor(t, "the runner waiting for the lock", func() bool { return strings.Contains(runnerLog.String(), waitingMessage) })
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}

		code, out := deploy.wait(t)
		if code != 0 {
			t.Fatalf("deploy exited %d:\n%s", code, out)
		}
		if err := <-runnerDone; err != nil {
			t.Fatalf("runner: %v\n%s", err, runnerLog.String())
		}
		if strings.Contains(runnerLog.String(), "Applying:") {
			t.Errorf("the runner applied migrations the script had applied:\n%s", runnerLog.String())
		}
		checkFullyMigrated(t, conn)
	})
}

// TestKilledDeployReleasesLock checks that the migration lock outlives
// neither the deploy nor its migration: stopped with SIGTERM, the script
// stops dbmate and releases the lock; killed outright (SIGKILL, no trap
// runs), the lock stays held while the dbmate it started is still migrating
// and is released when that ends. Either way a later deploy completes.
func TestKilledDeployReleasesLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// setup returns a deploy stuck in task_queue's ALTER TABLE tasks while it
	// holds the migration lock, and the transaction it waits for.
	setup := func(t *testing.T) (string, *pgx.Conn, pgx.Tx, *deployRun) {
		t.Helper()
		url := pgtest.EmptyURL(t)
		migrateTo(t, url, versionBeforeTaskQueue)
		conn := connect(t, url)
		tx := holdTasks(t, connect(t, url))
		deploy := startDeploy(t, url, []string{"DEPLOY_LOCK_TIMEOUT=60s"})
		waitFor(t, "the deploy's migration waiting for tasks", func() bool {
			var waiting bool
			err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
				WHERE datname = current_database() AND application_name = 'taskq-deploy' AND wait_event_type = 'Lock')`).Scan(&waiting)
			return err == nil && waiting
		})
		if holder := lockHolder(t, conn); holder != "taskq-deploy-lock" {
			t.Fatalf("migration lock held by %q while the deploy migrates, want taskq-deploy-lock", holder)
		}
		return url, conn, tx, deploy
	}

	t.Run("SIGTERM", func(t *testing.T) {
		t.Parallel()
		url, conn, tx, deploy := setup(t)
		if err := deploy.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code, out := deploy.wait(t); code == 0 {
			t.Fatalf("a terminated deploy exited 0:\n%s", out)
		}
		waitFor(t, "the migration lock released", func() bool { return lockHolder(t, conn) == "" })
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		mustDeploy(t, url, nil)
		checkFullyMigrated(t, conn)
	})

	t.Run("SIGKILL", func(t *testing.T) {
		t.Parallel()
		url, conn, tx, deploy := setup(t)
		if err := deploy.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		deploy.wait(t)
		// Its dbmate is still waiting for tasks: another deploy must not
		// start migrating now.
		if holder := lockHolder(t, conn); holder != "taskq-deploy-lock" {
			t.Fatalf("with the killed deploy's dbmate still migrating, the lock is held by %q", holder)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the migration lock released once the orphaned dbmate ended", func() bool { return lockHolder(t, conn) == "" })
		mustDeploy(t, url, nil)
		checkFullyMigrated(t, conn)
	})
}

// TestRollbackUndoesTheLatestMigration rolls back the newest migration
// through the script (a down that may use CONCURRENTLY) and deploys again.
func TestRollbackUndoesTheLatestMigration(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t, migrate.VersionLatest)
	conn := connect(t, url)
	files := fileVersions(t)

	mustDeploy(t, url, nil, "rollback")
	if diff := cmp.Diff(files[:len(files)-1], appliedVersions(t, conn)); diff != "" {
		t.Fatalf("applied after rollback (-want +got):\n%s", diff)
	}
	if out := mustDeploy(t, url, nil, "status"); !strings.Contains(out, "Pending: 1") {
		t.Errorf("status after a rollback should show one pending migration:\n%s", out)
	}
	mustDeploy(t, url, nil)
	checkFullyMigrated(t, conn)
}

// TestUpMovesTheRecordOutOfPublic: a database an older deploy migrated has
// dbmate's record in public.schema_migrations (put back there by hand here).
// The script moves it to taskq_meta and finds nothing to migrate.
func TestUpMovesTheRecordOutOfPublic(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t, migrate.VersionLatest)
	conn := connect(t, url)
	if _, err := conn.Exec(context.Background(), "ALTER TABLE "+migrate.MigrationsTable+" SET SCHEMA public"); err != nil {
		t.Fatal(err)
	}

	out := mustDeploy(t, url, nil)
	for _, want := range []string{"moved public.schema_migrations to taskq_meta.schema_migrations", "Nothing to migrate"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	var inPublic bool
	if err := conn.QueryRow(context.Background(),
		"SELECT to_regclass('public.schema_migrations') IS NOT NULL").Scan(&inPublic); err != nil {
		t.Fatal(err)
	}
	if inPublic {
		t.Error("public.schema_migrations is still there")
	}
	checkFullyMigrated(t, conn)
}

// TestUsage: --help succeeds, a wrong argument is a usage error, and a
// missing DATABASE_URL is named.
func TestUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args     []string
		env      []string
		wantCode int
		wantOut  string
	}{
		{args: []string{"--help"}, wantCode: 0, wantOut: "Usage: DATABASE_URL="},
		{args: []string{"sideways"}, wantCode: 2, wantOut: "Usage: DATABASE_URL="},
		{args: []string{"up"}, wantCode: 1, wantOut: "DATABASE_URL is not set"},
		{
			args:     []string{"up"},
			env:      []string{"DATABASE_URL=postgres://127.0.0.1/x", "DEPLOY_LOCK_TIMEOUT=5 seconds"},
			wantCode: 1,
			wantOut:  "DEPLOY_LOCK_TIMEOUT=5 seconds is not a duration",
		},
	} {
		code, out := startDeploy(t, "", tc.env, tc.args...).wait(t)
		if code != tc.wantCode || !strings.Contains(out, tc.wantOut) {
			t.Errorf("deploy %v: exit %d, want %d with %q in the output:\n%s", tc.args, code, tc.wantCode, tc.wantOut, out)
		}
	}
}

// --- running the script ------------------------------------------------------

type deployRun struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startDeploy runs scripts/deploy against url with extra environment
// variables. Its output goes to a file, not a pipe, so that waiting for it
// does not wait for processes it leaves behind. Unless env sets DBMATE, the
// script gets the pinned dbmate built beforehand: building it is no part of
// what a test times (on a cold build cache, under the race detector's load,
// it took longer than the whole deploy is given).
func startDeploy(t *testing.T, url string, env []string, args ...string) *deployRun {
	t.Helper()
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "DBMATE=") }) {
		env = append(env, "DBMATE="+pinnedDbmate(t))
	}
	root := sharedtest.RepoRoot(t)
	dir := t.TempDir()
	out, err := os.CreateTemp(dir, "deploy-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "scripts", "deploy"), args...)
	cmd.Dir = root
	// TMPDIR: a killed script leaves its temporary files behind.
	cmd.Env = append(append(scriptEnv(), "TMPDIR="+dir), env...)
	if url != "" {
		cmd.Env = append(cmd.Env, "DATABASE_URL="+url)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &deployRun{cmd: cmd, log: out.Name(), done: make(chan struct{})}
	go func() {
		cmd.Wait() //nolint:errcheck // the exit code is read from ProcessState
		out.Close()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have just exited
			<-d.done
		}
	})
	return d
}

// scriptEnv is this process's environment without the settings that would
// change what the script does.
func scriptEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name == "DATABASE_URL" || name == "TMPDIR" || strings.HasPrefix(name, "DEPLOY_") ||
			strings.HasPrefix(name, "DBMATE") || strings.HasPrefix(name, "PG") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (d *deployRun) output() string {
	b, _ := os.ReadFile(d.log)
	return string(b)
}

// wait returns the exit code (-1 when killed by a signal) and the output;
// a deploy still running after three minutes fails the test.
func (d *deployRun) wait(t *testing.T) (int, string) {
	t.Helper()
	return d.waitWithin(t, 3*time.Minute)
}

// waitWithin is wait with a ceiling of limit: past it the deploy is stopped
// and the test fails.
func (d *deployRun) waitWithin(t *testing.T, limit time.Duration) (int, string) {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(limit):
		d.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // best effort
		<-d.done
		t.Fatalf("deploy %v did not finish within %v:\n%s", d.cmd.Args[1:], limit, d.output())
	}
	return d.cmd.ProcessState.ExitCode(), d.output()
}

func mustDeploy(t *testing.T, url string, env []string, args ...string) string {
	t.Helper()
	code, out := startDeploy(t, url, env, args...).wait(t)
	if code != 0 {
		t.Fatalf("deploy %v exited %d:\n%s", args, code, out)
	}
	return out
}

var pinned struct {
	once sync.Once
	path string
	err  error
}

// pinnedDbmate returns the path of the dbmate binary pinned in tools/go.mod,
// built once.
func pinnedDbmate(t *testing.T) string {
	t.Helper()
	pinned.once.Do(func() {
		cmd := exec.Command("go", "tool", "-n", "-modfile=tools/go.mod", "dbmate")
		cmd.Dir = sharedtest.RepoRoot(t)
		out, err := cmd.Output()
		pinned.path, pinned.err = strings.TrimSpace(string(out)), err
	})
	if pinned.err != nil {
		t.Fatalf("build the pinned dbmate: %v", pinned.err)
	}
	return pinned.path
}

// --- the database ------------------------------------------------------------

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func migrateTo(t *testing.T, url, version string) {
	t.Helper()
	if err := (migrate.Runner{URL: url, Target: version}).Up(context.Background()); err != nil {
		t.Fatalf("migrate to %s: %v", version, err)
	}
}

// holdTasks opens a REPEATABLE READ transaction that has read tasks: it holds
// ACCESS SHARE on tasks (an ALTER TABLE waits for it) and a snapshot (a
// concurrent index build waits for it).
func holdTasks(t *testing.T, conn *pgx.Conn) pgx.Tx {
	t.Helper()
	tx, err := conn.BeginTx(context.Background(), pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(context.Background(), "SELECT count(*) FROM tasks"); err != nil {
		t.Fatal(err)
	}
	return tx
}

// lockHolder returns the application_name of the session holding the
// migration lock in this database ("unnamed" when it set none), or "" when
// nobody holds it.
func lockHolder(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var holder string
	err := conn.QueryRow(context.Background(), `
		SELECT CASE WHEN count(*) = 0 THEN '' ELSE coalesce(nullif(max(a.application_name), ''), 'unnamed') END
		FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
		  AND l.classid = $1 AND l.objid = $2
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		lockKeyClass, lockKeyObject).Scan(&holder)
	if err != nil {
		t.Fatal(err)
	}
	return holder
}

var migrationFile = regexp.MustCompile(`^(\d+)_.+\.sql$`)

// fileVersions lists the versions of the migration files the script reads.
func fileVersions(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(sharedtest.RepoRoot(t), "sql", "schema"))
	if err != nil {
		t.Fatal(err)
	}
	var versions []string
	for _, e := range entries {
		if m := migrationFile.FindStringSubmatch(e.Name()); m != nil {
			versions = append(versions, m[1])
		}
	}
	sort.Strings(versions)
	return versions
}

func appliedVersions(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT version::text FROM "+migrate.MigrationsTable+" ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return versions
}

func lastApplied(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	applied := appliedVersions(t, conn)
	if len(applied) == 0 {
		return ""
	}
	return applied[len(applied)-1]
}

func invalidIndexes(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `
		SELECT indexrelid::regclass::text FROM pg_index WHERE NOT (indisvalid AND indisready) ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// checkFullyMigrated: every migration file is applied, once, and no index is
// invalid.
func checkFullyMigrated(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	if diff := cmp.Diff(fileVersions(t), appliedVersions(t, conn)); diff != "" {
		t.Errorf("schema_migrations against the migration files (-files +applied):\n%s", diff)
	}
	if invalid := invalidIndexes(t, conn); len(invalid) > 0 {
		t.Errorf("invalid indexes: %v", invalid)
	}
}

// schemaSnapshot describes the objects the migrations create, one line each,
// to compare a database the script migrated with one the Go runner did.
func schemaSnapshot(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `
		WITH ns AS (SELECT oid, nspname FROM pg_namespace WHERE nspname IN ('public', 'auth'))
		SELECT line FROM (
		    SELECT format('relation %s.%s kind=%s rls=%s', ns.nspname, c.relname, c.relkind, c.relrowsecurity) AS line
		    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
		    WHERE c.relkind IN ('r', 'v', 'm', 'S', 'p') AND c.relname <> 'schema_migrations'
		    UNION ALL
		    SELECT format('column %s.%s.%s %s notnull=%s', ns.nspname, c.relname, a.attname,
		                  format_type(a.atttypid, a.atttypmod), a.attnotnull)
		    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN ns ON ns.oid = c.relnamespace
		    WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v', 'p') AND c.relname <> 'schema_migrations'
		    UNION ALL
		    SELECT format('index %s valid=%s', pg_get_indexdef(i.indexrelid), i.indisvalid AND i.indisready)
		    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN ns ON ns.oid = c.relnamespace
		    WHERE c.relname NOT LIKE 'schema_migrations%'
		    UNION ALL
		    SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
		    FROM pg_constraint WHERE connamespace IN (SELECT oid FROM ns) AND conrelid::regclass::text <> 'schema_migrations'
		    UNION ALL
		    SELECT format('policy %s.%s %s %s to=%s using=%s', schemaname, tablename, policyname, cmd, roles, qual)
		    FROM pg_policies WHERE schemaname IN (SELECT nspname FROM ns)
		    UNION ALL
		    SELECT format('function %s', pg_get_functiondef(p.oid))
		    FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
		    UNION ALL
		    SELECT format('trigger %s', pg_get_triggerdef(t.oid))
		    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN ns ON ns.oid = c.relnamespace
		    WHERE NOT t.tgisinternal
		) s
		ORDER BY line`)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return lines
}

// --- helpers -------------------------------------------------------------------

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not reached within 60s: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
