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
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
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
	if ping(ctx, DefaultURL) == nil {
		return Server{URL: DefaultURL}, nil
	}
	return StartThrowaway(ctx)
}

func ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

// Dir is where this user's throwaway cluster lives.
func Dir() string {
	return filepath.Join(os.TempDir(), "taskq-postgres-"+strconv.Itoa(os.Getuid()))
}

// StartThrowaway starts this user's throwaway cluster, or returns it if it is
// already running.
func StartThrowaway(ctx context.Context) (Server, error) {
	bin, err := binDir()
	if err != nil {
		return Server{}, err
	}
	dir := Dir()
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
		srv.URL = urlForPort(strings.TrimSpace(string(port)))
		if ping(ctx, srv.URL) == nil {
			return srv, nil
		}
	}

	runAs, err := owner()
	if err != nil {
		return Server{}, err
	}
	data := filepath.Join(dir, "data")
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err != nil {
		_ = os.RemoveAll(data)
		if err := runAs.chown(dir); err != nil {
			return Server{}, err
		}
		if err := runAs.run(ctx, filepath.Join(bin, "initdb"),
			"-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
			return Server{}, fmt.Errorf("throwaway postgres: initdb: %w", err)
		}
	}
	port, err := freePort()
	if err != nil {
		return Server{}, err
	}
	logFile := filepath.Join(dir, "postgres.log")
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=300", port, dir)
	if err := runAs.chown(dir); err != nil {
		return Server{}, err
	}
	if err := runAs.run(ctx, filepath.Join(bin, "pg_ctl"),
		"-D", data, "-l", logFile, "-o", opts, "-w", "-t", "60", "start"); err != nil {
		return Server{}, fmt.Errorf("throwaway postgres: pg_ctl start (log: %s): %w", logFile, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "port"), []byte(strconv.Itoa(port)), 0o644); err != nil {
		return Server{}, err
	}
	srv.URL = urlForPort(strconv.Itoa(port))
	return srv, ping(ctx, srv.URL)
}

// StopThrowaway stops this user's throwaway cluster and deletes it.
func StopThrowaway(ctx context.Context) error {
	dir := Dir()
	data := filepath.Join(dir, "data")
	if _, err := os.Stat(data); err != nil {
		return nil
	}
	bin, err := binDir()
	if err != nil {
		return err
	}
	runAs, err := owner()
	if err != nil {
		return err
	}
	// Already stopped is fine; anything else leaves the directory for a look.
	if err := runAs.run(ctx, filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"); err != nil {
		if _, statErr := os.Stat(filepath.Join(data, "postmaster.pid")); statErr == nil {
			return fmt.Errorf("throwaway postgres: pg_ctl stop: %w", err)
		}
	}
	return os.RemoveAll(dir)
}

func urlForPort(port string) string {
	return "postgres://postgres@127.0.0.1:" + port + "/postgres?sslmode=disable"
}

// binDir finds the directory holding initdb and pg_ctl: PATH, pg_config, or
// Debian's /usr/lib/postgresql/<version>/bin (newest version first).
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(real), nil
		}
		return filepath.Dir(p), nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	return "", fmt.Errorf("%w: nothing answers at 127.0.0.1:5432 and no PostgreSQL binaries "+
		"(initdb, pg_ctl) are installed; install them (Debian/Ubuntu: apt-get install postgresql) "+
		"or point at a server you have (DATABASE_URL for taskq, TASKQ_TEST_DATABASE_URL for the tests)", ErrNoPostgres)
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
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

// account is who runs initdb and postgres: this process's user, or the
// "postgres" system user when this process is root (initdb refuses root).
type account struct {
	cred *syscall.Credential
}

func owner() (account, error) {
	if os.Geteuid() != 0 {
		return account{}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return account{}, fmt.Errorf("%w: running as root, and initdb refuses root; "+
			"no \"postgres\" user to run it as (%v): run as another user, or point at a server "+
			"(DATABASE_URL for taskq, TASKQ_TEST_DATABASE_URL for the tests)", ErrNoPostgres, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return account{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}, nil
}

func (a account) chown(dir string) error {
	if a.cred == nil {
		return nil
	}
	return filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(a.cred.Uid), int(a.cred.Gid))
	})
}

func (a account) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if a.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: a.cred}
	}
	// The server outlives this process: keep it out of our process group so
	// a Ctrl-C here does not stop it mid-test.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.Dir = os.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
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
