package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// cpuMeter measures the CPU time this process and the server's backends on
// the benchmark's database use between start and stop. The server's share
// is read from /proc, so it is known only when the server runs on this
// machine. Backends that exit meanwhile are missed; the benchmarks keep
// their connections open.
type cpuMeter struct {
	pool   *pgxpool.Pool
	client time.Duration
	server map[int]time.Duration
}

func startCPU(ctx context.Context, pool *pgxpool.Pool) (*cpuMeter, error) {
	m := &cpuMeter{pool: pool, client: clientCPU()}
	var err error
	m.server, err = m.backends(ctx)
	return m, err
}

// stop returns the CPU time used since start by this process and by the
// database's backends; server is 0 when /proc has none of them.
func (m *cpuMeter) stop(ctx context.Context) (client, server time.Duration, err error) {
	client = clientCPU() - m.client
	now, err := m.backends(ctx)
	if err != nil {
		return 0, 0, err
	}
	for pid, cpu := range now {
		server += cpu - m.server[pid]
	}
	return client, server, nil
}

// backends returns the CPU time so far of each backend on the database
// (client sessions, autovacuum workers) that /proc shows.
func (m *cpuMeter) backends(ctx context.Context) (map[int]time.Duration, error) {
	rows, err := m.pool.Query(ctx, "SELECT pid FROM pg_catalog.pg_stat_activity WHERE datname = current_database()")
	if err != nil {
		return nil, err
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, err
	}
	out := map[int]time.Duration{}
	for _, pid := range pids {
		if cpu, err := procCPU(int(pid)); err == nil {
			out[int(pid)] = cpu
		}
	}
	return out, nil
}

// procCPU reads a process's user and system time from /proc/<pid>/stat,
// which counts in USER_HZ (100 per second on Linux).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// after its closing parenthesis, where field 3 (state) comes first.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] { // utime, stime: fields 14 and 15
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

func clientCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
