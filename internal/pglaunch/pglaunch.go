// Package pglaunch runs the PostgreSQL and PgBouncer processes of
// development and tests: it finds the installed binaries, picks a free port,
// runs them as an account they accept (initdb, postgres and pgbouncer all
// refuse root), and waits until they answer.
//
// It serves localpg (the throwaway server of "taskq" and the tests),
// pgclustertest (a private cluster for one test) and pgbouncertest (a
// private PgBouncer for one test).
package pglaunch

import (
	"context"
	"errors"
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
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNotInstalled means the binaries asked for are not on this machine.
var ErrNotInstalled = errors.New("not installed")

// BinDir finds the directory holding initdb and pg_ctl: PATH, pg_config, or
// Debian's /usr/lib/postgresql/<version>/bin (newest version first).
func BinDir() (string, error) {
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
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, pg_ctl) %w", ErrNotInstalled)
}

// PgBouncer finds the pgbouncer binary: PATH, else Debian's
// /usr/sbin/pgbouncer (not in every user's PATH).
func PgBouncer() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	const debian = "/usr/sbin/pgbouncer"
	if _, err := os.Stat(debian); err == nil {
		return debian, nil
	}
	return "", fmt.Errorf("pgbouncer (looked in PATH and %s) %w", debian, ErrNotInstalled)
}

// FreePort returns a TCP port of 127.0.0.1 nothing listened on just now.
// Another process may take it before the caller binds it.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// URL connects as the superuser "postgres" to the "postgres" database of a
// server on port of 127.0.0.1.
func URL(port int) string {
	return DatabaseURL(port, "postgres")
}

// DatabaseURL connects as "postgres" to database name on port of 127.0.0.1.
func DatabaseURL(port int, name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, name)
}

// Account is who runs a server process: this process's user, or the
// "postgres" system user when this process is root. The zero value is this
// process's user.
type Account struct {
	cred *syscall.Credential
}

// Unprivileged returns the account to run program as; the error says that
// program refuses root when this process is root and there is no "postgres"
// user to switch to.
func Unprivileged(program string) (Account, error) {
	if os.Geteuid() != 0 {
		return Account{}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return Account{}, fmt.Errorf("running as root, which %s refuses, and there is no "+
			"\"postgres\" user to run it as (%v): run as another user", program, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return Account{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}, nil
}

// Give hands path, and all below it, to the account, and lets the account
// reach path through its parent (t.TempDir's parent is private, 0700, to the
// test's user): search permission for others, no listing. Nothing to do
// when the account is this process's user.
func (a Account) Give(path string) error {
	if a.cred == nil {
		return nil
	}
	err := filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(a.cred.Uid), int(a.cred.Gid))
	})
	if err != nil {
		return err
	}
	parent := filepath.Dir(path)
	info, err := os.Stat(parent)
	if err != nil {
		return err
	}
	if info.Mode().Perm()&0o001 != 0 {
		return nil // already searchable; leaves /tmp's sticky bit alone too
	}
	keep := os.ModePerm | os.ModeSticky | os.ModeSetuid | os.ModeSetgid
	return os.Chmod(parent, info.Mode()&keep|0o001)
}

// Command is name with args, to run as the account in dir.
func (a Account) Command(dir, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	a.prepare(cmd, dir)
	return cmd
}

// Run runs name with args as the account in dir and waits for it; the
// error carries what it printed. It runs in a process group of its own, so
// that a Ctrl-C aimed at this process does not reach a server it starts
// halfway through (the server outlives pg_ctl).
func (a Account) Run(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	a.prepare(cmd, dir)
	cmd.SysProcAttr.Setpgid = true
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", filepath.Base(name), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (a Account) prepare(cmd *exec.Cmd, dir string) {
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: a.cred}
}

// Ping connects to url and runs one query, within 3 seconds. It uses the
// simple query protocol, which PgBouncer's admin console and transaction
// pooling both accept; through PgBouncer it also proves the pooler can log
// in to the database behind it.
func Ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "SELECT 1")
	return err
}

// Await pings url until it answers, for at most timeout. gone, when not nil,
// is asked between attempts whether the process meant to answer has ended;
// its error ends the wait at once.
func Await(ctx context.Context, url string, timeout time.Duration, gone func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if gone != nil {
			if err := gone(); err != nil {
				return err
			}
		}
		err := Ping(ctx, url)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s does not answer after %s: %w", redact(url), timeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// redact drops a password from url for an error message.
func redact(url string) string {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return "server"
	}
	return fmt.Sprintf("server at %s:%d", cfg.Host, cfg.Port)
}
