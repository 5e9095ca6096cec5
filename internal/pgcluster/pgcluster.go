// Package pgcluster starts a private PostgreSQL cluster for one test: its
// own data directory and port, so a test may restart or stop it without
// disturbing the shared server other test packages use at the same time.
//
// The cluster runs from the installed binaries (initdb, pg_ctl), as the
// "postgres" system user when the test runs as root, since initdb refuses
// root. It is stopped and deleted when the test ends.
package pgcluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a running private PostgreSQL cluster.
type Cluster struct {
	// URL connects as the superuser "postgres" to the "postgres" database.
	URL string
	// Dir holds the data directory, the socket and the server log.
	Dir  string
	Port int

	bin  string
	cred *syscall.Credential
}

// Start initialises and starts a cluster for t, and registers its stop and
// deletion with t.Cleanup. It skips t when no PostgreSQL binaries are
// installed, and fails it when the cluster does not start.
func Start(t testing.TB) *Cluster {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		t.Skipf("pgcluster: %v", err)
	}
	cred, err := owner()
	if err != nil {
		t.Skipf("pgcluster: %v", err)
	}
	// Not t.TempDir(): its parent is private to this user, and the server
	// may run as another one.
	dir, err := os.MkdirTemp("", "taskq-pgcluster-")
	if err != nil {
		t.Fatalf("pgcluster: %v", err)
	}
	c := &Cluster{Dir: dir, bin: bin, cred: cred}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := os.Stat(filepath.Join(c.dataDir(), "postmaster.pid")); err == nil {
			if err := c.pgctl(ctx, "stop", "-m", "immediate"); err != nil {
				t.Logf("pgcluster: stop: %v", err)
			}
		}
		_ = os.RemoveAll(dir)
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("pgcluster: %v", err)
	}
	if err := c.chown(dir); err != nil {
		t.Fatalf("pgcluster: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.run(ctx, filepath.Join(bin, "initdb"), "-D", c.dataDir(), "-U", "postgres",
		"--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		t.Fatalf("pgcluster: initdb: %v", err)
	}
	if c.Port, err = freePort(); err != nil {
		t.Fatalf("pgcluster: %v", err)
	}
	// fsync is off: a clean shutdown (restart -m fast) still writes
	// everything out; only an operating system crash would lose data.
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", c.Port, dir)
	if err := c.pgctl(ctx, "start", "-o", opts); err != nil {
		t.Fatalf("pgcluster: start: %v\n%s", err, c.Log())
	}
	c.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port)
	if err := ping(ctx, c.URL); err != nil {
		t.Fatalf("pgcluster: %v\n%s", err, c.Log())
	}
	return c
}

// DatabaseURL is the URL of database name on the cluster.
func (c *Cluster) DatabaseURL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, name)
}

// Restart restarts the server with "pg_ctl restart -m fast": every session
// is disconnected and its open transaction rolled back, then the server
// starts again on the same port with the same data. It returns once the
// server accepts connections again.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.pgctl(ctx, "restart", "-m", "fast"); err != nil {
		return fmt.Errorf("pg_ctl restart: %w\n%s", err, c.Log())
	}
	return ping(ctx, c.URL)
}

// Log is the server's log so far, for failure messages.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(c.logFile())
	return string(b)
}

func (c *Cluster) dataDir() string { return filepath.Join(c.Dir, "data") }
func (c *Cluster) logFile() string { return filepath.Join(c.Dir, "postgres.log") }

// pgctl runs pg_ctl on the cluster, waiting for the action to complete. The
// log file must be given on every start and restart: without it the server
// would inherit pg_ctl's output, which this process is reading.
func (c *Cluster) pgctl(ctx context.Context, action string, args ...string) error {
	all := append([]string{"-D", c.dataDir(), "-l", c.logFile(), "-w", "-t", "60", action}, args...)
	return c.run(ctx, filepath.Join(c.bin, "pg_ctl"), all...)
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	// Its own process group: a Ctrl-C aimed at the test does not reach the
	// server halfway through.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true}
	cmd.Dir = c.Dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", filepath.Base(name), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (c *Cluster) chown(dir string) error {
	if c.cred == nil {
		return nil
	}
	return os.Lchown(dir, int(c.cred.Uid), int(c.cred.Gid))
}

func ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(context.Background())
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server at %s does not answer: %w", url, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// owner is who runs the server: this process's user, or "postgres" when
// this process is root.
func owner() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, which initdb refuses, and there is no \"postgres\" user to run it as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// binDir finds initdb and pg_ctl: PATH, pg_config, or Debian's
// /usr/lib/postgresql/<version>/bin (newest first).
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
	version := func(d string) int { v, _ := strconv.Atoi(filepath.Base(filepath.Dir(d))); return v }
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server binaries (initdb, pg_ctl) installed")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
