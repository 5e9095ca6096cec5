// Package pgbouncertest runs a private PgBouncer in transaction pooling mode
// in front of a test's database, the local stand-in for Supabase's
// transaction pooler (Supavisor, port 6543): Debian's pgbouncer (1.18) keeps
// no prepared statements across transactions and no LISTEN, exactly the
// constraints the application must live with there.
//
// Start writes pgbouncer.ini and userlist.txt into the test's temporary
// directory, runs the pgbouncer binary on a free port of 127.0.0.1 (as the
// "postgres" system user when the test runs as root, since pgbouncer refuses
// root), waits until it accepts connections, and stops it when the test
// ends. A missing pgbouncer fails the test, with how to install it: tests
// that prove pooler support must not pass by skipping.
package pgbouncertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/blue-banded-bee/taskq/internal/pglaunch"
)

// Options tune the PgBouncer Start runs. The zero value is a small pool
// suited to tests that want server connections shared between clients.
type Options struct {
	// PoolSize is default_pool_size: how many server connections PgBouncer
	// opens to the database (for the one user). Default 2, so that a handful
	// of client connections already share them.
	PoolSize int
	// MaxClientConn is max_client_conn. Default 200.
	MaxClientConn int
	// IgnoreStartupParameters are startup parameters PgBouncer drops instead
	// of refusing the connection (ignore_startup_parameters). Default none:
	// a client that sends session settings at startup (statement_timeout,
	// plan_cache_mode, ...) is refused, as it must not rely on them here.
	IgnoreStartupParameters []string
	// Settings are further [pgbouncer] settings, such as query_wait_timeout;
	// they override the ones Start writes.
	Settings map[string]string
}

// Bouncer is a running PgBouncer.
type Bouncer struct {
	// URL connects through PgBouncer to the database given to Start, as the
	// same user.
	URL string
	// AdminURL connects to PgBouncer's admin console (database
	// "pgbouncer"), which speaks only the simple query protocol.
	AdminURL string
	// Dir holds pgbouncer.ini, userlist.txt and pgbouncer.log.
	Dir string
	// Port is the TCP port PgBouncer listens on at 127.0.0.1.
	Port int
	// Database is the name clients connect to (the database's own name).
	Database string
}

// PoolStats is what PgBouncer's SHOW POOLS says about the database's pool.
type PoolStats struct {
	// Mode is the pool_mode: "transaction".
	Mode string
	// ClientsActive are client connections logged in and not waiting
	// (in transaction mode, including those between transactions);
	// ClientsWaiting wait for a server connection to run a transaction on.
	ClientsActive  int
	ClientsWaiting int
	// Servers are the server connections open to PostgreSQL, in any state.
	Servers int
}

// Stats reads the database's pool from the admin console.
func (b *Bouncer) Stats(ctx context.Context) (PoolStats, error) {
	cfg, err := pgx.ParseConfig(b.AdminURL)
	if err != nil {
		return PoolStats{}, err
	}
	// The console speaks only the simple query protocol.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return PoolStats{}, fmt.Errorf("pgbouncer admin console: %w", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SHOW POOLS")
	if err != nil {
		return PoolStats{}, fmt.Errorf("SHOW POOLS: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return PoolStats{}, err
		}
		col := map[string]string{}
		for i, f := range rows.FieldDescriptions() {
			col[f.Name] = fmt.Sprint(vals[i])
		}
		if col["database"] != b.Database {
			continue // the console's own pool, "pgbouncer"
		}
		n := func(name string) int {
			v, _ := strconv.Atoi(col[name])
			return v
		}
		return PoolStats{
			Mode:           col["pool_mode"],
			ClientsActive:  n("cl_active"),
			ClientsWaiting: n("cl_waiting"),
			Servers:        n("sv_active") + n("sv_idle") + n("sv_used") + n("sv_tested") + n("sv_login"),
		}, rows.Err()
	}
	if err := rows.Err(); err != nil {
		return PoolStats{}, err
	}
	return PoolStats{}, fmt.Errorf("SHOW POOLS: no pool for database %s yet", b.Database)
}

// Log returns what PgBouncer has logged so far.
func (b *Bouncer) Log() string {
	out, _ := os.ReadFile(filepath.Join(b.Dir, "pgbouncer.log"))
	return string(out)
}

// installHint says how to get the binary; the message of every failure to
// find it.
const installHint = "pgbouncer is not installed (looked in PATH and /usr/sbin/pgbouncer): " +
	"run `make test-deps` (which `make test` runs first: it installs Debian's pgbouncer as root or with sudo), " +
	"or install it yourself with `sudo apt-get install -y pgbouncer`. " +
	"The pooler tests need a real PgBouncer in transaction mode and do not skip without one"

// Binary returns the path of the pgbouncer binary: the one in PATH, else
// Debian's /usr/sbin/pgbouncer (not in every user's PATH).
func Binary() (string, error) {
	p, err := pglaunch.PgBouncer()
	if err != nil {
		return "", errors.New(installHint)
	}
	return p, nil
}

// Start runs a PgBouncer with pool_mode = transaction in front of the
// database databaseURL names, and returns it once it accepts connections.
// It is stopped when the test ends, before the database is dropped (the
// cleanups of pgtest.URL run after those registered later).
func Start(t testing.TB, databaseURL string, opts Options) *Bouncer {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("pgbouncertest: %v", err)
	}
	if opts.PoolSize <= 0 {
		opts.PoolSize = 2
	}
	if opts.MaxClientConn <= 0 {
		opts.MaxClientConn = 200
	}
	target, err := pgconn.ParseConfig(databaseURL)
	if err != nil {
		t.Fatalf("pgbouncertest: database url: %v", err)
	}
	for _, v := range []string{target.Host, target.Database, target.User, target.Password} {
		if strings.ContainsAny(v, " '\"\\=\n") {
			t.Fatalf("pgbouncertest: %q cannot go into pgbouncer.ini unquoted", v)
		}
	}
	runAs, err := pglaunch.Unprivileged("pgbouncer")
	if err != nil {
		t.Fatalf("pgbouncertest: %v", err)
	}

	dir := t.TempDir()
	// PgBouncer reads its files and writes its log and pid file here.
	if err := runAs.Give(dir); err != nil {
		t.Fatalf("pgbouncertest: %v", err)
	}

	// A free port may be taken between asking for it and PgBouncer binding
	// it; try again on another.
	var lastErr error
	for range 3 {
		port, err := pglaunch.FreePort()
		if err != nil {
			t.Fatalf("pgbouncertest: %v", err)
		}
		b := &Bouncer{
			Dir:      dir,
			Port:     port,
			Database: target.Database,
			URL:      poolerURL(target, port, target.Database),
			AdminURL: poolerURL(target, port, "pgbouncer"),
		}
		if err := writeConfig(b, target, opts, runAs); err != nil {
			t.Fatalf("pgbouncertest: %v", err)
		}
		stop, err := run(bin, b, runAs)
		if err == nil {
			t.Cleanup(stop)
			return b
		}
		lastErr = err
		if !strings.Contains(b.Log(), "Address already in use") {
			break
		}
	}
	t.Fatalf("pgbouncertest: %v", lastErr)
	return nil
}

func poolerURL(target *pgconn.Config, port int, database string) string {
	u := url.URL{
		Scheme:   "postgres",
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	if target.Password != "" {
		u.User = url.UserPassword(target.User, target.Password)
	} else {
		u.User = url.User(target.User)
	}
	return u.String()
}

func writeConfig(b *Bouncer, target *pgconn.Config, opts Options, runAs pglaunch.Account) error {
	// The server connection logs in as the test's user whatever the client
	// says, with the password when there is one (auth to PostgreSQL); clients
	// are trusted (auth_type = trust still wants them in auth_file).
	server := fmt.Sprintf("host=%s port=%d dbname=%s user=%s", target.Host, target.Port, target.Database, target.User)
	if target.Password != "" {
		server += " password=" + target.Password
	}
	ini := fmt.Sprintf(`[databases]
%s = %s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
admin_users = %s
pool_mode = transaction
default_pool_size = %d
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = %d
ignore_startup_parameters = %s
logfile = %s
pidfile = %s
log_connections = 0
log_disconnections = 0
%s`,
		target.Database, server,
		b.Port,
		filepath.Join(b.Dir, "userlist.txt"),
		target.User,
		opts.PoolSize,
		opts.MaxClientConn,
		strings.Join(opts.IgnoreStartupParameters, ","),
		filepath.Join(b.Dir, "pgbouncer.log"),
		filepath.Join(b.Dir, "pgbouncer.pid"),
		extra(opts.Settings),
	)
	userlist := fmt.Sprintf("%q %q\n", target.User, target.Password)
	for name, content := range map[string]string{"pgbouncer.ini": ini, "userlist.txt": userlist} {
		path := filepath.Join(b.Dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			return err
		}
		if err := runAs.Give(path); err != nil {
			return err
		}
	}
	return nil
}

// extra renders settings as ini lines, sorted; PgBouncer takes the last
// value of a setting given twice.
func extra(settings map[string]string) string {
	names := make([]string, 0, len(settings))
	for name := range settings {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		fmt.Fprintf(&b, "%s = %s\n", name, settings[name])
	}
	return b.String()
}

// run starts pgbouncer and waits until it answers a query; stop ends it.
func run(bin string, b *Bouncer, runAs pglaunch.Account) (stop func(), err error) {
	cmd := runAs.Command(b.Dir, bin, filepath.Join(b.Dir, "pgbouncer.ini"))
	// Its log goes to pgbouncer.log; stderr only carries start-up failures
	// before the log is open.
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() {
		// SIGTERM: immediate shutdown, whatever clients are still connected.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}

	var exitErr error
	gone := func() error {
		select {
		case err := <-exited:
			exitErr = fmt.Errorf("pgbouncer exited (%v): %s\nlog:\n%s", err, strings.TrimSpace(stderr.String()), b.Log())
		default:
		}
		return exitErr
	}
	if err := pglaunch.Await(context.Background(), b.URL, 15*time.Second, gone); err != nil {
		if exitErr != nil {
			return nil, exitErr
		}
		stop()
		return nil, fmt.Errorf("pgbouncer on port %d: %w\nlog:\n%s", b.Port, err, b.Log())
	}
	return stop, nil
}
