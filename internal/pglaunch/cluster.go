package pglaunch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Cluster is a PostgreSQL cluster in a directory of its own: the data
// directory, the server log and the Unix socket live in Dir, and the server
// listens on 127.0.0.1 only.
type Cluster struct {
	Dir string
	// Port is where the server listens, once started.
	Port int

	bin string
	as  Account
}

// NewCluster finds the binaries and the account for a cluster in dir, which
// must exist. It starts nothing. The error wraps ErrNotInstalled when there
// are no binaries.
func NewCluster(dir string) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	as, err := Unprivileged("initdb")
	if err != nil {
		return nil, err
	}
	return &Cluster{Dir: dir, bin: bin, as: as}, nil
}

// DataDir is the cluster's data directory.
func (c *Cluster) DataDir() string { return filepath.Join(c.Dir, "data") }

// LogFile is the server's log.
func (c *Cluster) LogFile() string { return filepath.Join(c.Dir, "postgres.log") }

// Log is the server's log so far, for failure messages.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(c.LogFile())
	return string(b)
}

// Initialised says whether initdb has completed in the data directory.
func (c *Cluster) Initialised() bool {
	_, err := os.Stat(filepath.Join(c.DataDir(), "PG_VERSION"))
	return err == nil
}

// Running says whether a server may be running on the data directory (its
// pid file is there).
func (c *Cluster) Running() bool {
	_, err := os.Stat(filepath.Join(c.DataDir(), "postmaster.pid"))
	return err == nil
}

// Init runs initdb: superuser "postgres", trust authentication, UTF8,
// without waiting for the files to reach the disk.
func (c *Cluster) Init(ctx context.Context) error {
	if err := c.as.Give(c.Dir); err != nil {
		return err
	}
	return c.as.Run(ctx, c.Dir, filepath.Join(c.bin, "initdb"),
		"-D", c.DataDir(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
}

// Start starts the server on a free port of 127.0.0.1, with settings
// ("name=value") passed as -c options, and returns once it accepts
// connections at c.URL().
func (c *Cluster) Start(ctx context.Context, settings ...string) error {
	if err := c.as.Give(c.Dir); err != nil {
		return err
	}
	port, err := FreePort()
	if err != nil {
		return err
	}
	c.Port = port
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", port, c.Dir)
	for _, s := range settings {
		opts += " -c " + s
	}
	if err := c.pgctl(ctx, "start", "-o", opts); err != nil {
		return err
	}
	return Await(ctx, c.URL(), 30*time.Second, nil)
}

// URL connects as the superuser "postgres" to the "postgres" database.
func (c *Cluster) URL() string { return URL(c.Port) }

// Restart runs "pg_ctl restart -m fast": every session is disconnected and
// its open transaction rolled back, then the server starts again with the
// same port, options and data. It returns once the server accepts
// connections again.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.pgctl(ctx, "restart", "-m", "fast"); err != nil {
		return err
	}
	return Await(ctx, c.URL(), 30*time.Second, nil)
}

// Stop stops the server in mode ("fast", "immediate").
func (c *Cluster) Stop(ctx context.Context, mode string) error {
	return c.pgctl(ctx, "stop", "-m", mode)
}

// pgctl runs pg_ctl on the cluster, waiting up to a minute for the action to
// complete. The log file goes on every call: without it a started server
// would inherit pg_ctl's output, which this process is reading.
func (c *Cluster) pgctl(ctx context.Context, action string, args ...string) error {
	all := append([]string{"-D", c.DataDir(), "-l", c.LogFile(), "-w", "-t", "60", action}, args...)
	if err := c.as.Run(ctx, c.Dir, filepath.Join(c.bin, "pg_ctl"), all...); err != nil {
		return fmt.Errorf("%w (log: %s)", err, c.LogFile())
	}
	return nil
}
