package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// unreachableDatabase is a DATABASE_URL where nothing listens.
const unreachableDatabase = "postgres://x@127.0.0.1:1/x?connect_timeout=1"

// runTimeout bounds one run: with its context already cancelled, every
// command must give up at once.
const runTimeout = 20 * time.Second

// isolate points taskq away from every real database and file: DATABASE_URL
// at a port where nothing listens, and so libpq's PGHOST and PGPORT (which
// an empty DATABASE_URL, or a URL that names no host or port, falls back
// to), and the temporary directory (where the throwaway cluster that
// "localpg stop" deletes, and that loadtest would start, lives) at a
// directory of the test's own.
func isolate(tb testing.TB) {
	tb.Helper()
	tb.Setenv("DATABASE_URL", unreachableDatabase)
	tb.Setenv("PGHOST", "127.0.0.1")
	tb.Setenv("PGPORT", "1")
	tb.Setenv("TMPDIR", tb.TempDir())
}

// runCancelled runs the command line args as main does, with a context that
// is already cancelled, so that no command gets to do real work. It fails
// the test if run panics or does not return within runTimeout.
func runCancelled(t *testing.T, args []string) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	type outcome struct {
		err   error
		panic string
	}
	done := make(chan outcome, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- outcome{panic: fmt.Sprintf("%v\n%s", r, debug.Stack())}
			}
		}()
		done <- outcome{err: run(ctx, args, strings.NewReader(""), io.Discard, io.Discard)}
	}()
	select {
	case o := <-done:
		if o.panic != "" {
			t.Fatalf("run(%q) panicked: %s", args, o.panic)
		}
		return o.err
	case <-time.After(runTimeout):
		t.Fatalf("run(%q) did not return within %s of a cancelled context", args, runTimeout)
		return nil
	}
}

// splitArgs turns a fuzzed string into a command line: split on NUL bytes
// if it has any (so arguments may hold spaces), else on spaces (so they may
// be empty). The empty string is no arguments at all.
func splitArgs(line string) []string {
	if line == "" {
		return nil
	}
	if strings.Contains(line, "\x00") {
		return strings.Split(line, "\x00")
	}
	return strings.Split(line, " ")
}

func isUsageError(err error) bool {
	var usageErr usageError
	return errors.As(err, &usageErr)
}

func FuzzParseArgs(f *testing.F) {
	for _, seed := range []string{
		"", " ", "\x00", "help", "-h", "--help", "-help", "bogus", "HELP", "work\x00", "\xff", "wörk",
		"migrate", "migrate up", "migrate down", "migrate status", "migrate sideways", "migrate up down",
		"migrate --target 20251024000002 up", "migrate --target nonsense", "migrate --help", "migrate -x",
		"work", "work --help", "work --workers 0", "work --workers -3", "work --workers 99999999999",
		"work --workers 99999999999999999999", "work --claim-batch 0", "work --claim-batch 99999999999",
		"work --claim-batch -1",
		"work --claimers 0",
		"work --claimers 99999999", "work --poll 0", "work --poll -5s", "work --poll 5", "work --poll 1h",
		"work --simulate --delay -1s", "work --delay 1s", "work --shutdown-timeout -1s", "work --shutdown-timeout 0",
		"work --workers=2 --claim-batch=10 --pooler --no-maintain -v", "work --listen-url \x00",
		"work\x00--listen-url\x00postgres://a b@/\x00--pooler", "work extra arguments", "work --v=maybe",
		"work --database-url=%zz", "work\x00--database-url\x00postgres://\xff@127.0.0.1:1/\x00",
		"loadtest", "loadtest --help", "loadtest --modes before,after", "loadtest --modes bogus", "loadtest --modes ",
		"loadtest --modes before,,after", "loadtest --tasks 0", "loadtest --tasks 99999999999",
		"loadtest --jobs -1", "loadtest --workers -3", "loadtest --workers 99999999999", "loadtest --batch 0",
		"loadtest --concurrency 0", "loadtest --delay -1s", "loadtest --max-duration -1h", "loadtest --max-duration 0",
		"loadtest --dashboard-samples -1", "loadtest --json /dev/null --keep", "loadtest --jobs 10 --tasks 5",
		"stats", "stats --window 0", "stats --window -1m", "stats --window 999999h", "stats --window x",
		"localpg", "localpg stop", "localpg start", "localpg stop now", "localpg --help",
		"work --database-url=", "migrate\x00--database-url=\x00sideways",
		"work extra --workers 0 --simulate", "migrate status --database-url postgres://a:b@127.0.0.1:1/x",
		"migrate status extra", "migrate --json up", "stats --json now", "stats --pooler --json", "work -- --workers 2",
		"version", "--version", "version now", "job", "job --help", "job bogus", "job list", "job list --status nope",
		"job list --limit 0", "job list --status running,paused --json", "job show", "job show a b", "job show x --json",
		"job create", "job create --domain example.com", "job create --domain https://example.com/",
		"job create --domain 'a b'", "job create --domain example.com --concurrency -1 --max-pages -1",
		"job create --domain example.com --id x --find-links --max-retries 0 --json",
		"job enqueue", "job enqueue x", "job enqueue x /a /b", "job enqueue x --from -", "job enqueue x --from /nonexistent",
		"job enqueue x --sitemap http://127.0.0.1:1/sitemap.xml", "job enqueue x --priority NaN /a",
		"job pause", "job pause x", "job resume x y", "job cancel x --pooler",
	} {
		f.Add(seed)
	}
	isolate(f)

	f.Fuzz(func(t *testing.T, line string) {
		if strings.Contains(line, "5432") {
			// A --database-url naming the real server: "migrate status"
			// connects without its context (see TestMeaninglessFlagValues).
			t.Skip("names the port of a real server")
		}
		args := splitArgs(line)
		err := runCancelled(t, args)
		if err == nil {
			return // help, the version, or "localpg stop" with no cluster to stop
		}
		msg := err.Error()
		code := exitCode(err)
		switch {
		case errors.Is(err, flag.ErrHelp):
			if code != 0 {
				t.Errorf("run(%q): --help exits %d, want 0", args, code)
			}
		case isUsageError(err):
			if code != 2 || strings.TrimSpace(msg) == "" {
				t.Errorf("run(%q): usage error %q exits %d, want a message and 2", args, msg, code)
			}
		default:
			// The command line was accepted, so the command got as far as the
			// database, which it cannot reach: it must say so.
			if code != 1 || !saysWhy(err) {
				t.Errorf("run(%q): error %q (%T) exits %d; want 1 and a message naming the context or the database",
					args, msg, err, code)
			}
		}
		if !utf8.ValidString(msg) {
			t.Logf("run(%q): error message is not valid UTF-8: %q", args, msg)
		}
	})
}

// saysWhy tells whether err, from a command that could not do its work
// because its context was cancelled and its database unreachable, says so.
func saysWhy(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	msg := err.Error()
	for _, why := range []string{"context canceled", "database unavailable", "database url", "cannot parse",
		"failed to connect", "connect: connection refused", "no PostgreSQL server found", "no migration has that version"} {
		if strings.Contains(msg, why) {
			return true
		}
	}
	return false
}

// TestMeaninglessFlagValues: values that cannot mean anything must be
// refused as usage errors (exit 2) before taskq touches a database, not
// silently replaced by a default, clamped, or refused only after connecting.
func TestMeaninglessFlagValues(t *testing.T) {
	isolate(t)
	for _, line := range []string{
		"work --workers -3",
		"work --workers 0",
		"work --claim-batch 0",
		"work --claim-batch -1",
		"work --claimers 0",
		"work --claimers 99999999",
		"work --workers 99999999999999999999", // beyond int: the flag package refuses it
		"work --poll x",
		"work --poll 0",
		"work --poll -5s",
		"work --simulate --delay -1s",
		"work --shutdown-timeout -1s",
		"work --lease 0",
		"work --lease 999ms",
		"loadtest --workers -3",
		"loadtest --tasks 0",
		"loadtest --modes bogus",
		"migrate up down",
		"localpg start",
		"work --claim-batch 99999999999",
		"work --workers 99999999999",
		"work --shutdown-timeout 0",
		"work --delay 1s",
		"loadtest --delay -1s",
		"loadtest --max-duration -1h",
		"loadtest --max-duration 0",
		"loadtest --dashboard-samples -1",
		"loadtest --workers 99999999999",
		"stats --window -1m",
		"migrate --target nonsense",
		"migrate\x00--database-url=\x00sideways",
		"work extra --workers 2",
		"migrate status extra",
		"stats now",
		"job list --limit 0",
		"job list --status nope",
		"job create --domain https://example.com/",
		"job create",
		"job enqueue some-job",
		"job pause a b",
		"job show",
	} {
		t.Run(strings.ReplaceAll(line, "\x00", " "), func(t *testing.T) {
			args := splitArgs(line)
			err := runCancelled(t, args)
			if !isUsageError(err) || exitCode(err) != 2 {
				t.Errorf("run(%q) = %v (exit %d), want a usage error (exit 2)", args, err, exitCode(err))
			}
		})
	}
}
